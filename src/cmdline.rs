//! The guest command line (`/chosen/bootargs`): what to run and how to report it.
//!
//! Tokens are separated by white space. Unknown tokens are kept and reported as a warning,
//! never fatal: a VMM may put its own options on the same line (Linux does the same).

use crate::hyp::profile::Profile;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// How the guest ends the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// PSCI SYSTEM_OFF through the tree's conduit (works everywhere; QEMU then exits 0).
    Psci,
    /// Semihosting SYS_EXIT_EXTENDED, so QEMU TCG exits with the status directly.
    Semihosting,
}

/// Where the suite's lines go (`output=`). The UART always carries the boot lines and
/// anything fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Uart,
    /// virtio-console, one request per line; the UART when there is none.
    Virtio,
    /// virtio-console when the tree has one, else the UART (the default).
    Auto,
}

/// Verbosity of the `log` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

/// The options ioguard understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `list`: print the checks that would run, run none.
    pub list: bool,
    /// `only=GLOB[,GLOB]`: run only the checks whose key matches one of the globs.
    pub only: Vec<String>,
    /// `log=LEVEL`.
    pub log: LogLevel,
    /// `trace`: print every hypercall and every fault as it happens.
    pub trace: bool,
    /// `exit=psci|semihosting`.
    pub exit: ExitMethod,
    /// `ioguard.profile=NAME`: overrides the detected hypervisor profile.
    pub profile: Option<Profile>,
    /// `repeat=N`: run the selection N times (1..=1000), to shake out flaky verdicts.
    pub repeat: u32,
    /// `output=uart|virtio|auto`.
    pub output: Output,
    /// `fuzz=SEED[,COUNT][,only=N][,private-dma]`: run the seeded hypercall fuzzer (`fuzz: run`).
    pub fuzz: Option<crate::fuzz::FuzzSpec>,
    /// Tokens that are not ours (kept for a warning line).
    pub unknown: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            list: false,
            only: Vec::new(),
            log: LogLevel::Info,
            trace: false,
            exit: ExitMethod::Psci,
            profile: None,
            repeat: 1,
            output: Output::Auto,
            fuzz: None,
            unknown: Vec::new(),
        }
    }
}

/// A token that is ours but malformed. Reported as a failure of the run: a user who asked
/// for `only=` or `exit=` and got something else would misread the results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    BadValue { option: &'static str, value: String },
    EmptyOnly,
    UnknownProfile(String),
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadValue { option, value } => {
                write!(f, "bad value '{value}' for option '{option}'")
            }
            Self::EmptyOnly => write!(f, "'only=' needs at least one pattern"),
            Self::UnknownProfile(name) => {
                write!(f, "unknown profile '{name}' (known:")?;
                for (i, p) in Profile::known_names().enumerate() {
                    write!(f, "{}{p}", if i == 0 { " " } else { ", " })?;
                }
                write!(f, ")")
            }
        }
    }
}

/// The most `repeat=` allows.
pub const MAX_REPEAT: u32 = 1000;

/// Parses the command line. Tokens that are not ioguard's (a VMM's `console=`, say) are
/// collected in `unknown`; a malformed value of one of ours is an error.
pub fn parse(line: &str) -> Result<Options, CmdlineError> {
    let mut o = Options::default();
    for tok in line.split_ascii_whitespace() {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        match (key, value) {
            ("list", None) => o.list = true,
            ("trace", None) => o.trace = true,
            ("only", Some(v)) => {
                let globs: Vec<String> = v
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(|g| g.to_string())
                    .collect();
                if globs.is_empty() {
                    return Err(CmdlineError::EmptyOnly);
                }
                o.only.extend(globs);
            }
            ("log", Some(v)) => {
                o.log = LogLevel::parse(v).ok_or(CmdlineError::BadValue {
                    option: "log",
                    value: v.to_string(),
                })?
            }
            ("output", Some(v)) => {
                o.output = match v {
                    "uart" => Output::Uart,
                    "virtio" => Output::Virtio,
                    "auto" => Output::Auto,
                    _ => {
                        return Err(CmdlineError::BadValue {
                            option: "output",
                            value: v.to_string(),
                        })
                    }
                }
            }
            ("exit", Some(v)) => {
                o.exit = match v {
                    "psci" => ExitMethod::Psci,
                    "semihosting" => ExitMethod::Semihosting,
                    _ => {
                        return Err(CmdlineError::BadValue {
                            option: "exit",
                            value: v.to_string(),
                        })
                    }
                }
            }
            ("repeat", Some(v)) => o.repeat = repeat(v)?,
            ("fuzz", Some(v)) => o.fuzz = Some(fuzz_spec(v)?),
            ("ioguard.profile", Some(v)) if !v.is_empty() => {
                o.profile = Some(
                    Profile::parse(v).ok_or_else(|| CmdlineError::UnknownProfile(v.to_string()))?,
                )
            }
            ("ioguard.profile", Some(v)) => {
                return Err(CmdlineError::BadValue {
                    option: "ioguard.profile",
                    value: v.to_string(),
                })
            }
            _ => o.unknown.push(tok.to_string()),
        }
    }
    Ok(o)
}

fn fuzz_spec(v: &str) -> Result<crate::fuzz::FuzzSpec, CmdlineError> {
    crate::fuzz::FuzzSpec::parse(v).ok_or(CmdlineError::BadValue {
        option: "fuzz",
        value: v.to_string(),
    })
}

fn repeat(v: &str) -> Result<u32, CmdlineError> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_REPEAT).contains(n))
        .ok_or(CmdlineError::BadValue {
            option: "repeat",
            value: v.to_string(),
        })
}

/// The key a check is selected by: its name with the ": " between group and case
/// written as ":", so `only=guard:stray-read` needs no quoting.
pub fn check_key(name: &str) -> String {
    name.replace(": ", ":")
}

impl Options {
    /// Whether the check called `name` is selected. `default` is false for checks that
    /// only run when named (self-tests of the reporting path): those need a pattern
    /// without wildcards that names them exactly.
    pub fn selects(&self, name: &str, default: bool) -> bool {
        let key = check_key(name);
        if self.only.is_empty() && self.fuzz.is_some() {
            // `fuzz=` alone runs the fuzzer alone.
            return key == "fuzz:run";
        }
        if self.only.is_empty() {
            return default;
        }
        self.only.iter().any(|g| {
            if default {
                crate::glob::matches(g, &key)
            } else {
                *g == key
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_runs_the_fuzzer_alone() {
        let o = parse("fuzz=7,100").unwrap();
        assert_eq!(o.fuzz.map(|f| (f.seed, f.count)), Some((7, 100)));
        assert!(o.selects("fuzz: run", false));
        assert!(!o.selects("guard: stray-read", true));
        let both = parse("fuzz=7 only=guard:*").unwrap();
        assert!(both.selects("guard: stray-read", true));
        assert!(!both.selects("fuzz: run", false));
        assert!(!parse("").unwrap().selects("fuzz: run", false));
        assert_eq!(
            parse("fuzz=x"),
            Err(CmdlineError::BadValue {
                option: "fuzz",
                value: "x".into()
            })
        );
    }

    #[test]
    fn empty_line_gives_defaults() {
        assert_eq!(parse("").unwrap(), Options::default());
        assert_eq!(parse("   \t ").unwrap(), Options::default());
    }

    #[test]
    fn all_options() {
        let o = parse("list only=boot:*,guard:stray-read log=debug trace exit=semihosting ioguard.profile=android13 console=ttyAMA0").unwrap();
        assert!(o.list && o.trace);
        assert_eq!(o.only, ["boot:*", "guard:stray-read"]);
        assert_eq!(o.log, LogLevel::Debug);
        assert_eq!(o.exit, ExitMethod::Semihosting);
        assert_eq!(o.profile, Some(Profile::Android13));
        assert_eq!(o.unknown, ["console=ttyAMA0"]);
    }

    #[test]
    fn repeated_only_accumulates() {
        let o = parse("only=a only=b,c").unwrap();
        assert_eq!(o.only, ["a", "b", "c"]);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(
            parse("log=loud"),
            Err(CmdlineError::BadValue { option: "log", .. })
        ));
        assert!(matches!(
            parse("exit=reboot"),
            Err(CmdlineError::BadValue { option: "exit", .. })
        ));
        assert_eq!(parse("only="), Err(CmdlineError::EmptyOnly));
        assert_eq!(parse("only=,,"), Err(CmdlineError::EmptyOnly));
        assert!(parse("ioguard.profile=").is_err());
        assert_eq!(parse("repeat=8").unwrap().repeat, 8);
        assert_eq!(parse("").unwrap().output, Output::Auto);
        assert_eq!(parse("output=uart").unwrap().output, Output::Uart);
        assert_eq!(parse("output=virtio").unwrap().output, Output::Virtio);
        assert_eq!(
            parse("output=uart output=auto").unwrap().output,
            Output::Auto
        );
        for bad in ["output=", "output=serial", "output=UART"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for bad in ["repeat=0", "repeat=1001", "repeat=x", "repeat="] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("ioguard.profile=android15").unwrap_err();
        assert_eq!(
            alloc::format!("{e}"),
            "unknown profile 'android15' (known: none, kvm, pkvm, android13, android14, android16, upstream)"
        );
    }

    #[test]
    fn flags_with_values_are_unknown() {
        // `list=1` is not `list`: keep it visible instead of guessing.
        let o = parse("list=1").unwrap();
        assert!(!o.list);
        assert_eq!(o.unknown, ["list=1"]);
    }

    #[test]
    fn selection() {
        let all = parse("").unwrap();
        assert!(all.selects("boot: mmu", true));
        assert!(!all.selects("selftest: panic", false));
        let some = parse("only=boot:*").unwrap();
        assert!(some.selects("boot: mmu", true));
        assert!(!some.selects("guard: info", true));
        // Hidden checks need their exact key, not a wildcard.
        let star = parse("only=*").unwrap();
        assert!(!star.selects("selftest: panic", false));
        let exact = parse("only=selftest:panic").unwrap();
        assert!(exact.selects("selftest: panic", false));
    }

    #[test]
    fn every_value_of_every_option_parses() {
        for (v, l) in [
            ("off", LogLevel::Off),
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ] {
            assert_eq!(parse(&alloc::format!("log={v}")).unwrap().log, l, "{v}");
        }
        assert_eq!(
            parse("exit=semihosting exit=psci").unwrap().exit,
            ExitMethod::Psci
        );
        // An empty profile is a bad value, not an unknown profile called "".
        assert!(matches!(
            parse("ioguard.profile="),
            Err(CmdlineError::BadValue {
                option: "ioguard.profile",
                ..
            })
        ));
    }
}
