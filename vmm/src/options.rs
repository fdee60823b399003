//! The command line: `ioguard-vmm [OPTIONS] IMAGE`.

use std::fmt;
use std::path::PathBuf;

use crate::layout::LayoutKind;
use crate::nisv::Policy;

pub const USAGE: &str = "\
usage: ioguard-vmm [--protected] [--cpus N] [--mem MIB] [--layout qemu|crosvm]
                   [--cmdline STRING] [--blk FILE] [--no-virtio] [--nisv stop|inject]
                   IMAGE

Boots IMAGE (an arm64 Linux Image, such as ioguard's) as a KVM VM on an aarch64 Linux host.

  --protected        a protected VM (KVM_VM_TYPE_ARM_PROTECTED: needs a pKVM host,
                     Linux 7.2 or later booted with kvm-arm.mode=protected)
  --cpus N           vCPUs, 1..=8 (default 1); vCPU 1.. start powered off (PSCI CPU_ON)
  --mem MIB          guest RAM in MiB, 16..=2048 (default 64)
  --layout L         qemu (default): QEMU virt's map, PL011, PL031, RAM at 0x40000000;
                     crosvm: crosvm's map, ns16550a at 0x3f8, PL030, RAM at 0x80000000
  --cmdline STRING   the guest's command line (/chosen/bootargs)
  --blk FILE         back the virtio-blk device with FILE (read-write) instead of an
                     8 MiB disk in memory
  --no-virtio        no virtio devices (blk, rng, console)
  --nisv P           an ordinary VM's access the VMM cannot emulate (no valid syndrome):
                     stop (default) reports it and stops the VM with status 5, as
                     crosvm does; inject reports it and injects an external data abort
  -h, --help         this text

Exit status: 0 the guest powered off (PSCI SYSTEM_OFF); 3 the guest reset;
1 the VMM failed or KVM_RUN returned an error; 2 bad usage or an unusable image;
4 the private-memory proof of a protected VM failed; 5 the guest made an access
the VMM cannot emulate (no valid syndrome) and --nisv stop ended the VM.";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub protected: bool,
    pub cpus: u32,
    pub mem_mib: u64,
    pub layout: LayoutKind,
    pub cmdline: String,
    pub blk: Option<PathBuf>,
    pub virtio: bool,
    pub nisv: Policy,
    pub image: PathBuf,
}

pub const MAX_CPUS: u32 = 8;
pub const MIN_MEM_MIB: u64 = 16;
/// The device tree goes below 512 MiB from the RAM base, and 2 GiB keeps every layout's
/// RAM inside a 40-bit IPA space with room to spare.
pub const MAX_MEM_MIB: u64 = 2048;

/// What the caller should do instead of running a VM.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Options),
    Help,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OptionError {
    MissingValue(&'static str),
    BadValue {
        option: &'static str,
        value: String,
        why: &'static str,
    },
    Unknown(String),
    NoImage,
    TwoImages(String),
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingValue(o) => write!(f, "{o} needs a value"),
            Self::BadValue { option, value, why } => {
                write!(f, "{option} {value:?}: {why}")
            }
            Self::Unknown(o) => write!(f, "unknown option {o:?}"),
            Self::NoImage => write!(f, "no IMAGE given"),
            Self::TwoImages(o) => write!(f, "a second IMAGE {o:?}: give exactly one"),
        }
    }
}

fn number(option: &'static str, value: &str, min: u64, max: u64) -> Result<u64, OptionError> {
    let bad = |why| OptionError::BadValue {
        option,
        value: value.to_string(),
        why,
    };
    let n: u64 = value.parse().map_err(|_| bad("not a decimal number"))?;
    if n < min || n > max {
        return Err(bad(match option {
            "--cpus" => "out of range 1..=8",
            _ => "out of range 16..=2048",
        }));
    }
    Ok(n)
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, OptionError> {
    let mut it = args.into_iter();
    let mut protected = false;
    let mut cpus = 1;
    let mut mem_mib = 64;
    let mut layout = LayoutKind::Qemu;
    let mut cmdline = String::new();
    let mut blk = None;
    let mut virtio = true;
    let mut nisv = Policy::Stop;
    let mut image: Option<PathBuf> = None;
    while let Some(arg) = it.next() {
        let mut value = |option: &'static str| it.next().ok_or(OptionError::MissingValue(option));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--protected" => protected = true,
            "--no-virtio" => virtio = false,
            "--cpus" => cpus = number("--cpus", &value("--cpus")?, 1, MAX_CPUS.into())? as u32,
            "--mem" => mem_mib = number("--mem", &value("--mem")?, MIN_MEM_MIB, MAX_MEM_MIB)?,
            "--layout" => {
                let v = value("--layout")?;
                layout = match v.as_str() {
                    "qemu" => LayoutKind::Qemu,
                    "crosvm" => LayoutKind::Crosvm,
                    _ => {
                        return Err(OptionError::BadValue {
                            option: "--layout",
                            value: v,
                            why: "expected qemu or crosvm",
                        })
                    }
                }
            }
            "--nisv" => {
                let v = value("--nisv")?;
                nisv = Policy::parse(&v).ok_or(OptionError::BadValue {
                    option: "--nisv",
                    value: v,
                    why: "expected stop or inject",
                })?;
            }
            "--cmdline" => cmdline = value("--cmdline")?,
            "--blk" => blk = Some(PathBuf::from(value("--blk")?)),
            "--" => {
                for rest in it.by_ref() {
                    if image.is_some() {
                        return Err(OptionError::TwoImages(rest));
                    }
                    image = Some(PathBuf::from(rest));
                }
            }
            o if o.starts_with('-') && o.len() > 1 => return Err(OptionError::Unknown(arg)),
            _ => {
                if image.is_some() {
                    return Err(OptionError::TwoImages(arg));
                }
                image = Some(PathBuf::from(arg));
            }
        }
    }
    Ok(Parsed::Run(Options {
        protected,
        cpus,
        mem_mib,
        layout,
        cmdline,
        blk,
        virtio,
        nisv,
        image: image.ok_or(OptionError::NoImage)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, OptionError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        let Ok(Parsed::Run(o)) = run(&["img"]) else {
            panic!("not parsed")
        };
        assert_eq!(
            o,
            Options {
                protected: false,
                cpus: 1,
                mem_mib: 64,
                layout: LayoutKind::Qemu,
                cmdline: String::new(),
                blk: None,
                virtio: true,
                nisv: Policy::Stop,
                image: PathBuf::from("img"),
            }
        );
    }

    #[test]
    fn every_option() {
        let Ok(Parsed::Run(o)) = run(&[
            "--protected",
            "--cpus",
            "2",
            "--mem",
            "128",
            "--layout",
            "crosvm",
            "--cmdline",
            "only=boot:* trace",
            "--blk",
            "/tmp/d",
            "--no-virtio",
            "--nisv",
            "inject",
            "img",
        ]) else {
            panic!("not parsed")
        };
        assert!(o.protected && !o.virtio);
        assert_eq!((o.cpus, o.mem_mib), (2, 128));
        assert_eq!(o.layout, LayoutKind::Crosvm);
        assert_eq!(o.cmdline, "only=boot:* trace");
        assert_eq!(o.blk, Some(PathBuf::from("/tmp/d")));
        assert_eq!(o.nisv, Policy::Inject);
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(run(&[]), Err(OptionError::NoImage));
        assert_eq!(run(&["--cpus"]), Err(OptionError::MissingValue("--cpus")));
        assert!(matches!(
            run(&["--cpus", "0", "i"]),
            Err(OptionError::BadValue {
                option: "--cpus",
                ..
            })
        ));
        assert!(matches!(
            run(&["--cpus", "9", "i"]),
            Err(OptionError::BadValue {
                option: "--cpus",
                ..
            })
        ));
        assert!(matches!(
            run(&["--mem", "8", "i"]),
            Err(OptionError::BadValue {
                option: "--mem",
                ..
            })
        ));
        assert!(matches!(
            run(&["--mem", "64M", "i"]),
            Err(OptionError::BadValue {
                why: "not a decimal number",
                ..
            })
        ));
        assert!(matches!(
            run(&["--layout", "kvmtool", "i"]),
            Err(OptionError::BadValue {
                option: "--layout",
                ..
            })
        ));
        assert_eq!(
            run(&["--nisv", "abort", "i"]),
            Err(OptionError::BadValue {
                option: "--nisv",
                value: "abort".into(),
                why: "expected stop or inject"
            })
        );
        assert_eq!(run(&["--nisv"]), Err(OptionError::MissingValue("--nisv")));
        assert_eq!(
            run(&["--nope", "i"]),
            Err(OptionError::Unknown("--nope".into()))
        );
        assert_eq!(run(&["a", "b"]), Err(OptionError::TwoImages("b".into())));
        assert_eq!(run(&["a", "--help"]), Ok(Parsed::Help));
        let shown = run(&["--mem", "1", "i"]).unwrap_err().to_string();
        assert!(
            shown.contains("--mem") && shown.contains("16..=2048"),
            "{shown}"
        );
    }
}
