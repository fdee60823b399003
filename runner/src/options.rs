//! Command-line options of `./qemu-run.sh` / `ioguard-run`, parsed without side effects.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default time a boot may take before the runner kills QEMU.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time the guest may print nothing before the runner stops it (`--silence`).
/// A whole run prints a line per check and takes well under a second on TCG.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(20);
/// Default directory of `--matrix`.
pub const DEFAULT_MATRIX_DIR: &str = "matrix";
/// Default number of boots of `--bench`.
pub const DEFAULT_BENCH_BOOTS: u32 = 10;
/// QEMU `virt` has 32 virtio-mmio transports.
pub const MAX_VIRTIO_MMIO: u32 = 32;
/// Size of the default virtio-blk device's file (one per run, see [`VirtioTransport`]).
pub const DEFAULT_BLK_SIZE: u64 = 8 << 20;
/// QEMU `virt` accepts at most 512 CPUs with GICv3 and 8 with GICv2.
pub const MAX_SMP_GICV3: u32 = 512;
/// See [`MAX_SMP_GICV3`].
pub const MAX_SMP_GICV2: u32 = 8;
/// Smallest `--mem` (MiB) that boots ioguard on plain QEMU: QEMU puts the device tree and
/// the Image (2 MiB in, 3 MiB with its .bss) in RAM.
pub const MIN_MEM_MIB: u64 = 8;
/// Smallest `--mem` (MiB) under `--hyp model`: the guest Image is staged at RAM + 16 MiB
/// (`0x41000000`), hypmodel and the guest's own RAM come on top.
pub const MIN_MEM_MIB_MODEL: u64 = 24;
/// QEMU CPU models of `qemu-system-aarch64 -cpu help` (QEMU 7.2) without AArch64: QEMU
/// starts them, and the 64-bit guest never prints a line.
pub const AARCH32_ONLY_CPUS: &[&str] = &[
    "arm1026",
    "arm1136",
    "arm1136-r2",
    "arm1176",
    "arm11mpcore",
    "arm926",
    "arm946",
    "cortex-a15",
    "cortex-a7",
    "cortex-a8",
    "cortex-a9",
    "cortex-m0",
    "cortex-m3",
    "cortex-m33",
    "cortex-m4",
    "cortex-m55",
    "cortex-m7",
    "cortex-r5",
    "cortex-r5f",
    "cortex-r52",
    "pxa250",
    "pxa255",
    "pxa260",
    "pxa261",
    "pxa262",
    "pxa270",
    "pxa270-a0",
    "pxa270-a1",
    "pxa270-b0",
    "pxa270-b1",
    "pxa270-c0",
    "pxa270-c5",
    "sa1100",
    "sa1110",
    "ti925t",
];

/// The `--help` text.
pub const HELP: &str = "\
Usage: ./qemu-run.sh [OPTIONS] [-- QEMU ARGS...]

Build the ioguard release image and boot it on QEMU `virt` (TCG). Prints the QEMU
command line first, streams the guest's lines, and ends with a verdict and one of the
exit statuses below.

Options:
  --smp N            number of CPUs (default 1; at most 8 with --gic 2 or --hyp model)
  --mem SIZE         guest RAM, QEMU syntax: 256M, 2G, 1024 (MiB) (default 256M;
                     at least 8M, 24M with --hyp model)
  --cpu MODEL        QEMU CPU model with AArch64, e.g. max, cortex-a53, cortex-a72
                     (default max; 32-bit-only models such as cortex-a15 are refused)
  --gic 2|3          GIC version (default 3)
  --append 'ARGS'    guest command line, e.g. 'only=guard:* log=debug', 'list'
                     (repeated --append options are joined with spaces; at most 2048
                     bytes with --hyp model)
  --virtio-transport mmio|mmio-modern|pci|both|none
                     the transport of the default virtio devices (see below;
                     default mmio): mmio is virtio-mmio as QEMU has it (legacy,
                     version 1); mmio-modern is virtio-mmio version 2
                     (-global virtio-mmio.force-legacy=false); pci is virtio-pci on
                     the PCIe root bus; both puts blk and rng on each (two of each),
                     the console and the NICs on virtio-mmio; none attaches none
  --virtio-blk N     attach N more virtio-blk-device (virtio-mmio) drives besides the
                     default devices (default 0), in the virtio-mmio slots those
                     leave free: at most 27 with mmio, mmio-modern or both (their 5
                     virtio-mmio devices come first), 32 with pci or none; each is a
                     shared 1 MiB file the guest's
                     writes never reach (snapshot=on); with mmio-modern they are
                     version 2 too
  --timeout S        seconds before a hang is killed and reported (default 60;
                     no timeout with --gdb unless given)
  --silence S        seconds the guest may print nothing before it is stopped and
                     reported (default 20; none with --gdb unless given)
  --image PATH       boot this raw arm64 Image instead of building the guest
                     (its header is checked first: magic ARM\\x64 at 0x38)
  --gdb              start QEMU halted with a gdb server on tcp::1234 (-s -S)
  --tap FILE         also write the results as TAP version 13 to FILE
  --junit FILE       also write the results as JUnit XML to FILE (not the --tap FILE;
                     both are checked writable before booting)
  --ktap FILE        also write the results as KTAP version 1 to FILE (names written
                     group_case, which Linaro's test-definitions keep unchanged)
  --matrix [DIR]     instead of one run, run the suite on every hypervisor reachable
                     here (plain QEMU, hypmodel's profiles and granules, the pKVM host's
                     VMs) and write DIR/matrix.md, DIR/matrix.html (check x hypervisor)
                     and DIR/<column>.tap/.ktap (default DIR: matrix); exit 0 when every
                     column ended with a verdict and no check FAILed, 1 when one did,
                     4 when a column ended without a verdict, 3 when one was unreachable
  --matrix-columns LIST
                     with --matrix: only these columns (comma-separated names as
                     DIR/matrix.md lists them; a trailing * matches a prefix)
  --hyp plain|model[:PROFILE][,mutant=NAME][,granule=4k|16k|64k][,enrolled=boot][,trace][,chaos=SEED][,range-max=N]
                     hypervisor under the guest: plain QEMU (default), or hypmodel,
                     the reference EL2 hypervisor (profiles android13, android14,
                     android16, upstream, kvm, pkvm; mutants as in hypmodel/README.md;
                     range-max=N: each android16 range call does at most N granules)
  --hyp pkvm[:protected|:ordinary|:qemu][,layout=qemu|crosvm][,cpu=max|cortex-a72|neoverse-n1]
                     a real upstream pKVM host: Debian's arm64 kernel (>= 7.2, fetched
                     once into ~/.cache/ioguard/pkvm) at EL2 under QEMU TCG runs the guest
                     in a protected (default) or ordinary VM of ioguard's VMM (vmm/), in
                     QEMU's or crosvm's layout, or in Debian's QEMU with -accel kvm;
                     cpu=max runs pKVM in hVHE mode, cortex-a72 in nVHE mode
  --qemu PATH        QEMU binary (default qemu-system-aarch64)
  --bench [N]        benchmark instead of a run: boot N times (default 10) and print
                     the image size and the median boot time against QEMU's floor
  -h, --help         print this help
  -- QEMU ARGS...    everything after -- is passed to QEMU unchanged (e.g. -dtb FILE)

Default devices: every run (plain QEMU and --hyp model alike) attaches one virtio-blk
backed by an 8 MiB raw file of zeros made for that run alone (the guest may write it;
it is removed when the runner exits, also on an error or a signal), one virtio-rng, one
virtio-console port (virtconsole) whose output goes to the same stdout stream as the
UART, in order, and two virtio-net NICs on one QEMU hub with no other netdev (they reach
each other and nothing else; QEMU's warning that the hub is not connected to the host
network is expected and not shown). --virtio-transport none attaches none of them.

When a run ends without a verdict (timeout, silence, no EXIT line), the runner names the
check that was running, the last line seen and the checks that never ran.

Exit status:
  0    every check passed (KFAIL allowed)
  1    a check failed (FAIL or XPASS)
  2    ioguard could not run its checks: the guest's fatal error (EXIT: STATUS=5),
       or a bad option or usage of the runner
  3    the launcher could not start or died on its own: QEMU missing, QEMU refusing
       its arguments, a failed build, a file that is not an arm64 Image
  4    the guest went silent (--silence) or powered off without a verdict (no valid
       EXIT line)
  124  timeout (--timeout)
  128+N  the runner got signal N (SIGINT, SIGTERM, SIGHUP); QEMU was stopped first
";

pub use crate::hyp::Hyp;

/// `--virtio-transport`: which virtio transport the default devices (one virtio-blk,
/// one virtio-rng, one virtio-console port, two virtio-net NICs) are attached on. The
/// QEMU words of each are [`crate::qemu::virtio_args`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VirtioTransport {
    /// virtio-mmio as QEMU `virt` has it by default: the legacy register layout (version 1).
    #[default]
    Mmio,
    /// virtio-mmio version 2 (`-global virtio-mmio.force-legacy=false`).
    MmioModern,
    /// virtio-pci on `virt`'s PCIe root bus (QEMU's defaults otherwise).
    Pci,
    /// blk and rng on virtio-mmio and on virtio-pci (two of each); the console and the
    /// two NICs on virtio-mmio.
    Both,
    /// No default device.
    None,
}

impl VirtioTransport {
    /// Every value, in the order `--help` lists them.
    pub const ALL: [VirtioTransport; 5] = [
        VirtioTransport::Mmio,
        VirtioTransport::MmioModern,
        VirtioTransport::Pci,
        VirtioTransport::Both,
        VirtioTransport::None,
    ];

    /// The value as `--virtio-transport` spells it.
    pub fn name(self) -> &'static str {
        match self {
            VirtioTransport::Mmio => "mmio",
            VirtioTransport::MmioModern => "mmio-modern",
            VirtioTransport::Pci => "pci",
            VirtioTransport::Both => "both",
            VirtioTransport::None => "none",
        }
    }

    /// Parse a `--virtio-transport` value.
    pub fn parse(v: &str) -> Result<VirtioTransport, UsageError> {
        match VirtioTransport::ALL.into_iter().find(|t| t.name() == v) {
            Some(t) => Ok(t),
            None => err(format!(
                "--virtio-transport '{v}': expected mmio, mmio-modern, pci, both or none"
            )),
        }
    }

    /// How many of `virt`'s [`MAX_VIRTIO_MMIO`] virtio-mmio slots the default devices
    /// take (blk, rng, the console's virtio-serial and the two NICs).
    pub fn mmio_slots(self) -> u32 {
        match self {
            VirtioTransport::Mmio | VirtioTransport::MmioModern | VirtioTransport::Both => 5,
            VirtioTransport::Pci | VirtioTransport::None => 0,
        }
    }

    /// How many default virtio-blk devices there are; each has its own file of
    /// [`DEFAULT_BLK_SIZE`] bytes, made for the run.
    pub fn blk_devices(self) -> usize {
        match self {
            VirtioTransport::Mmio | VirtioTransport::MmioModern | VirtioTransport::Pci => 1,
            VirtioTransport::Both => 2,
            VirtioTransport::None => 0,
        }
    }

    /// Whether the default devices include the two NICs (on QEMU's hub 0).
    pub fn has_nics(self) -> bool {
        self != VirtioTransport::None
    }
}

/// Everything that controls one run (or one benchmark).
///
/// Start from [`Options::default()`] (what `./qemu-run.sh` with no options does) and set
/// fields, or parse command-line words with [`parse_args`].
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// `--smp N`.
    pub smp: u32,
    /// `--mem SIZE`, QEMU's `-m` syntax.
    pub mem: String,
    /// `--cpu MODEL`.
    pub cpu: String,
    /// `--gic 2|3`.
    pub gic: u8,
    /// `--append`: the guest command line (`-append`), empty for none.
    pub append: String,
    /// `--virtio-transport`: where the default virtio devices go (none with
    /// [`VirtioTransport::None`]).
    pub virtio_transport: VirtioTransport,
    /// `--virtio-blk N`: drives on virtio-mmio besides the default devices.
    pub virtio_blk: u32,
    /// `--timeout S`; `None` means the default ([`DEFAULT_TIMEOUT`], or none with `--gdb`).
    pub timeout: Option<Duration>,
    /// `--silence S`; `None` means the default ([`DEFAULT_SILENCE`], or none with `--gdb`).
    pub silence: Option<Duration>,
    /// `--image PATH`: boot this raw Image, do not build.
    pub image: Option<PathBuf>,
    /// `--gdb`.
    pub gdb: bool,
    /// `--tap FILE`.
    pub tap: Option<PathBuf>,
    /// `--junit FILE`.
    pub junit: Option<PathBuf>,
    /// `--ktap FILE`.
    pub ktap: Option<PathBuf>,
    /// `--matrix [DIR]`: `Some(DIR)` runs the conformance matrix ([`crate::sweep`]).
    pub matrix: Option<PathBuf>,
    /// `--matrix-columns LIST`: the matrix's columns to run (all when empty).
    pub matrix_columns: Vec<String>,
    /// `--hyp`.
    pub hyp: Hyp,
    /// `--qemu PATH`.
    pub qemu: PathBuf,
    /// `--bench [N]`: `Some(N)` runs the benchmark instead of a test run.
    pub bench: Option<u32>,
    /// Arguments after `--`, appended to QEMU's command line unchanged.
    pub qemu_args: Vec<String>,
    /// Copy the QEMU command line, the guest's lines and the runner's verdicts to
    /// stdout/stderr as they arrive (`true` for the command; integration tests set
    /// `false` and read [`crate::Outcome::lines`]).
    pub echo: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            smp: 1,
            mem: "256M".to_string(),
            cpu: "max".to_string(),
            gic: 3,
            append: String::new(),
            virtio_transport: VirtioTransport::Mmio,
            virtio_blk: 0,
            timeout: None,
            silence: None,
            image: None,
            gdb: false,
            tap: None,
            junit: None,
            ktap: None,
            matrix: None,
            matrix_columns: Vec::new(),
            hyp: Hyp::Plain,
            qemu: PathBuf::from("qemu-system-aarch64"),
            bench: None,
            qemu_args: Vec::new(),
            echo: true,
        }
    }
}

impl Options {
    /// The timeout that applies: `--timeout`, else 60 s, else none under `--gdb`.
    pub fn effective_timeout(&self) -> Option<Duration> {
        match self.timeout {
            Some(t) => Some(t),
            None if self.gdb => None,
            None => Some(DEFAULT_TIMEOUT),
        }
    }

    /// The silence limit that applies: `--silence`, else 20 s, else none under `--gdb`.
    pub fn effective_silence(&self) -> Option<Duration> {
        match self.silence {
            Some(t) => Some(t),
            None if self.gdb => None,
            None => Some(DEFAULT_SILENCE),
        }
    }

    /// Add arguments for QEMU (as after `--`), e.g. `["-dtb", "bad.dtb"]`.
    pub fn with_qemu_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// What the command line asks for.
// Parsed once per process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `--help`: print [`HELP`] and exit 0.
    Help,
    /// A run (or, with `options.bench`, a benchmark).
    Run(Options),
}

/// A bad command line; the runner prints it and exits with status 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

fn parse_count(opt: &str, v: &str, min: u32, max: u32) -> Result<u32, UsageError> {
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => err(format!("{opt} {n}: must be between {min} and {max}")),
        Err(_) => err(format!("{opt} '{v}': not a whole number")),
    }
}

/// Check a QEMU `-m` size: digits with an optional K/M/G/T suffix (no suffix = MiB), > 0.
pub fn validate_mem(v: &str) -> Result<(), UsageError> {
    let digits = v.trim_end_matches(|c: char| "kKmMgGtT".contains(c));
    let suffix_len = v.len() - digits.len();
    let ok = suffix_len <= 1
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| b != b'0');
    if ok {
        Ok(())
    } else {
        err(format!(
            "--mem '{v}': expected a size such as 128M, 2G or 1024 (MiB)"
        ))
    }
}

/// A size accepted by [`validate_mem`] in MiB (rounded down).
pub fn mem_mib(v: &str) -> Option<u64> {
    let digits = v.trim_end_matches(|c: char| "kKmMgGtT".contains(c));
    let n: u64 = digits.parse().ok()?;
    match &v[digits.len()..] {
        "k" | "K" => Some(n / 1024),
        "" | "m" | "M" => Some(n),
        "g" | "G" => n.checked_mul(1024),
        "t" | "T" => n.checked_mul(1024 * 1024),
        _ => None,
    }
}

fn parse_secs(opt: &str, v: &str) -> Result<Duration, UsageError> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 1.0e6 => Ok(Duration::from_secs_f64(s)),
        _ => err(format!(
            "{opt} '{v}': expected a positive number of seconds"
        )),
    }
}

/// Parse the runner's arguments (without the program name).
///
/// Accepts `--opt VALUE` and `--opt=VALUE`. Everything after `--` goes to QEMU.
pub fn parse_args<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            o.qemu_args.extend(args[i..].iter().cloned());
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "--gdb" if inline.is_none() => o.gdb = true,
            "--bench" => o.bench = Some(bench_count(inline, &args, &mut i)?),
            "--matrix" => o.matrix = Some(matrix_dir(inline, &args, &mut i)?),
            _ => {
                // Takes the option's value: inline `--x=v` or the next word. Called only
                // for options that have one, so an unknown option is reported as such.
                let mut value = || match (&inline, args.get(i)) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(v)) => {
                        i += 1;
                        Ok(v.clone())
                    }
                    (None, None) => err(format!("{name} needs a value (see --help)")),
                };
                if !set_value(&mut o, name, &mut value)? {
                    return Err(not_an_option(arg, name));
                }
            }
        }
    }
    check_combination(&o)?;
    Ok(Command::Run(o))
}

/// What the options refuse together, or what QEMU or hypmodel would only refuse (or
/// silently misread) after the build and the boot.
fn check_combination(o: &Options) -> Result<(), UsageError> {
    if o.gic == 2 && o.smp > MAX_SMP_GICV2 {
        return err(format!(
            "--smp {} with --gic 2: GICv2 supports at most {MAX_SMP_GICV2} CPUs",
            o.smp
        ));
    }
    if AARCH32_ONLY_CPUS.contains(&o.cpu.as_str()) {
        return err(format!(
            "--cpu {}: this QEMU CPU model has no AArch64 (use max, cortex-a53, cortex-a57, \
             cortex-a72, cortex-a76, neoverse-n1, a64fx ...)",
            o.cpu
        ));
    }
    let min_mib = match o.hyp {
        Hyp::Model(_) => MIN_MEM_MIB_MODEL,
        _ => MIN_MEM_MIB,
    };
    if mem_mib(&o.mem).is_some_and(|m| m < min_mib) {
        let with = if min_mib == MIN_MEM_MIB {
            ""
        } else {
            " with --hyp model"
        };
        return err(format!(
            "--mem {}: ioguard needs at least {min_mib}M{with}",
            o.mem
        ));
    }
    check_virtio_slots(o)?;
    if let Hyp::Model(spec) = &o.hyp {
        crate::hyp::check_model_limits(spec, o.smp, &o.append).map_err(UsageError)?;
    }
    if let (Some(t), Some(j)) = (&o.tap, &o.junit) {
        if t == j {
            return err(format!(
                "--tap and --junit both name {}: give each its own file",
                t.display()
            ));
        }
    }
    check_report_options(o)
}

/// `--ktap` needs its own file; `--matrix` writes its own reports and picks each
/// column's hypervisor, so it refuses what would make it one run.
fn check_report_options(o: &Options) -> Result<(), UsageError> {
    for (other, p) in [("--tap", &o.tap), ("--junit", &o.junit)] {
        if p.is_some() && *p == o.ktap {
            return err(format!(
                "--ktap and {other} name the same file: give each its own file"
            ));
        }
    }
    if !o.matrix_columns.is_empty() && o.matrix.is_none() {
        return err("--matrix-columns goes with --matrix");
    }
    if o.matrix.is_some() {
        let refused = [
            ("--tap", o.tap.is_some()),
            ("--junit", o.junit.is_some()),
            ("--ktap", o.ktap.is_some()),
            ("--bench", o.bench.is_some()),
            ("--gdb", o.gdb),
            ("--hyp", o.hyp != Hyp::Plain),
            ("--image", o.image.is_some()),
        ];
        if let Some((opt, _)) = refused.iter().find(|(_, given)| *given) {
            return err(format!(
                "{opt} with --matrix: the matrix picks each column's hypervisor, builds the \
                 guest once and writes DIR/<column>.tap and .ktap itself"
            ));
        }
    }
    Ok(())
}

/// The directory of `--matrix`, which is optional: `--matrix`, `--matrix DIR`,
/// `--matrix=DIR`.
fn matrix_dir(
    inline: Option<String>,
    args: &[String],
    i: &mut usize,
) -> Result<PathBuf, UsageError> {
    let dir = match inline {
        Some(v) => v,
        None => match args.get(*i) {
            Some(v) if !v.starts_with('-') => {
                *i += 1;
                v.clone()
            }
            _ => DEFAULT_MATRIX_DIR.to_string(),
        },
    };
    Ok(PathBuf::from(non_empty("--matrix", dir)?))
}

/// `--matrix-columns a,b,model-*`.
fn matrix_columns(v: &str) -> Result<Vec<String>, UsageError> {
    let names: Vec<String> = v.split(',').map(|w| w.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return err(format!(
            "--matrix-columns '{v}': expected column names separated by commas"
        ));
    }
    Ok(names)
}

/// `--virtio-blk` drives and the default devices share `virt`'s virtio-mmio slots.
fn check_virtio_slots(o: &Options) -> Result<(), UsageError> {
    let t = o.virtio_transport;
    let free = MAX_VIRTIO_MMIO - t.mmio_slots();
    if o.virtio_blk <= free {
        return Ok(());
    }
    let default = if t == VirtioTransport::default() {
        " (the default)"
    } else {
        ""
    };
    err(format!(
        "--virtio-blk {} with --virtio-transport {}{default}: the default devices take {} of \
         QEMU virt's {MAX_VIRTIO_MMIO} virtio-mmio slots, so at most {free} more drives \
         (--virtio-transport pci or none leaves all {MAX_VIRTIO_MMIO} to --virtio-blk)",
        o.virtio_blk,
        t.name(),
        t.mmio_slots()
    ))
}

/// Sets the option `name` that takes a value, which `value` supplies; `false` if `name`
/// is not such an option.
fn set_value(
    o: &mut Options,
    name: &str,
    value: &mut dyn FnMut() -> Result<String, UsageError>,
) -> Result<bool, UsageError> {
    match name {
        "--smp" => o.smp = parse_count("--smp", &value()?, 1, MAX_SMP_GICV3)?,
        "--mem" => {
            let v = value()?;
            validate_mem(&v)?;
            o.mem = v;
        }
        "--cpu" => {
            let v = value()?;
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return err(format!("--cpu '{v}': expected a QEMU CPU model name"));
            }
            o.cpu = v;
        }
        "--gic" => {
            o.gic = match value()?.as_str() {
                "2" => 2,
                "3" => 3,
                v => return err(format!("--gic '{v}': expected 2 or 3")),
            }
        }
        "--append" => append(&mut o.append, value()?)?,
        "--virtio-blk" => {
            o.virtio_blk =
                parse_count("--virtio-blk", &value()?, 0, MAX_VIRTIO_MMIO).map_err(|e| {
                    UsageError(format!(
                        "{e} (QEMU virt has {MAX_VIRTIO_MMIO} virtio-mmio slots)"
                    ))
                })?
        }
        "--virtio-transport" => o.virtio_transport = VirtioTransport::parse(&value()?)?,
        "--timeout" => o.timeout = Some(parse_secs("--timeout", &value()?)?),
        "--silence" => o.silence = Some(parse_secs("--silence", &value()?)?),
        "--image" => {
            let v = value()?;
            if v.is_empty() {
                return err("--image needs a path");
            }
            o.image = Some(PathBuf::from(v));
        }
        "--tap" => o.tap = Some(PathBuf::from(non_empty("--tap", value()?)?)),
        "--junit" => o.junit = Some(PathBuf::from(non_empty("--junit", value()?)?)),
        "--ktap" => o.ktap = Some(PathBuf::from(non_empty("--ktap", value()?)?)),
        "--matrix-columns" => o.matrix_columns = matrix_columns(&value()?)?,
        "--qemu" => o.qemu = PathBuf::from(non_empty("--qemu", value()?)?),
        "--hyp" => o.hyp = Hyp::parse(&value()?).map_err(UsageError)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Repeated `--append` options are joined with spaces.
fn append(cmdline: &mut String, v: String) -> Result<(), UsageError> {
    if v.contains(['\n', '\r', '\0']) {
        return err("--append: the guest command line must be one line");
    }
    if !cmdline.is_empty() && !v.is_empty() {
        cmdline.push(' ');
    }
    cmdline.push_str(&v);
    Ok(())
}

/// The count of `--bench`, which is optional: `--bench`, `--bench 20`, `--bench=20`.
fn bench_count(inline: Option<String>, args: &[String], i: &mut usize) -> Result<u32, UsageError> {
    match inline {
        Some(v) => parse_count("--bench", &v, 1, 100_000),
        None => match args.get(*i) {
            Some(v) if !v.starts_with('-') => {
                *i += 1;
                parse_count("--bench", v, 1, 100_000)
            }
            _ => Ok(DEFAULT_BENCH_BOOTS),
        },
    }
}

fn not_an_option(arg: &str, name: &str) -> UsageError {
    UsageError(if name.starts_with('-') {
        format!("unknown option '{arg}' (see --help)")
    } else {
        format!(
            "unexpected argument '{arg}' (guest arguments go in --append '...', \
             QEMU arguments after --)"
        )
    })
}

fn non_empty(opt: &str, v: String) -> Result<String, UsageError> {
    if v.is_empty() {
        err(format!("{opt} needs a file name"))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse_args(args.iter().copied()) {
            Ok(Command::Run(o)) => o,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn bad(args: &[&str]) -> String {
        match parse_args(args.iter().copied()) {
            Err(UsageError(m)) => m,
            other => panic!("{args:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(
            (o.smp, o.mem.as_str(), o.cpu.as_str(), o.gic),
            (1, "256M", "max", 3)
        );
        assert_eq!(o.effective_timeout(), Some(Duration::from_secs(60)));
        assert!(o.echo);
    }

    #[test]
    fn every_option() {
        let o = run(&[
            "--smp",
            "4",
            "--mem=2G",
            "--cpu",
            "cortex-a53",
            "--gic",
            "2",
            "--append",
            "only=guard:*",
            "--append",
            "log=debug",
            "--virtio-blk",
            "32",
            "--virtio-transport",
            "none",
            "--timeout",
            "2.5",
            "--image",
            "x.bin",
            "--gdb",
            "--tap",
            "t.tap",
            "--junit",
            "j.xml",
            "--hyp",
            "plain",
            "--qemu",
            "/opt/q",
            "--",
            "-dtb",
            "bad.dtb",
            "--smp",
            "x",
        ]);
        assert_eq!(o.smp, 4);
        assert_eq!(o.mem, "2G");
        assert_eq!(o.cpu, "cortex-a53");
        assert_eq!(o.gic, 2);
        assert_eq!(o.append, "only=guard:* log=debug");
        assert_eq!(o.virtio_blk, 32);
        assert_eq!(o.virtio_transport, VirtioTransport::None);
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(o.image, Some(PathBuf::from("x.bin")));
        assert!(o.gdb);
        assert_eq!(o.tap, Some(PathBuf::from("t.tap")));
        assert_eq!(o.junit, Some(PathBuf::from("j.xml")));
        assert_eq!(o.qemu, PathBuf::from("/opt/q"));
        assert_eq!(o.qemu_args, ["-dtb", "bad.dtb", "--smp", "x"]);
        assert_eq!(o.bench, None);
    }

    #[test]
    fn help_wins_and_lists_every_option() {
        assert_eq!(parse_args(["--smp", "2", "--help"]), Ok(Command::Help));
        assert_eq!(parse_args(["-h"]), Ok(Command::Help));
        for opt in [
            "--smp N",
            "--mem SIZE",
            "--cpu MODEL",
            "--gic 2|3",
            "--append 'ARGS'",
            "--virtio-blk N",
            "--virtio-transport mmio|mmio-modern|pci|both|none",
            "--timeout S",
            "--image PATH",
            "--gdb",
            "--tap FILE",
            "--junit FILE",
            "--hyp plain|model[:PROFILE]",
            "--bench [N]",
            "-- QEMU ARGS",
        ] {
            assert!(HELP.contains(opt), "help lacks {opt}");
        }
    }

    #[test]
    fn gdb_has_no_default_timeout_but_keeps_an_explicit_one() {
        assert_eq!(run(&["--gdb"]).effective_timeout(), None);
        assert_eq!(
            run(&["--gdb", "--timeout", "5"]).effective_timeout(),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn bench_count_is_optional() {
        assert_eq!(run(&["--bench"]).bench, Some(10));
        assert_eq!(run(&["--bench", "3"]).bench, Some(3));
        assert_eq!(run(&["--bench=7"]).bench, Some(7));
        let o = run(&["--bench", "--smp", "2"]);
        assert_eq!((o.bench, o.smp), (Some(10), 2));
        assert!(bad(&["--bench", "0"]).contains("between 1"));
        assert!(bad(&["--bench", "ten"]).contains("not a whole number"));
    }

    #[test]
    fn hyp_values() {
        assert_eq!(run(&["--hyp", "model"]).hyp, Hyp::Model(Default::default()));
        assert_eq!(run(&["--hyp=pkvm"]).hyp, Hyp::Pkvm(Default::default()));
        assert!(bad(&["--hyp", "xen"]).contains("expected plain, model"));
        assert!(bad(&["--hyp", "model:android99"]).contains("unknown profile"));
    }

    #[test]
    fn bad_values_are_clear() {
        assert!(bad(&["--smp", "four"]).contains("--smp 'four': not a whole number"));
        assert!(bad(&["--smp", "0"]).contains("between 1 and 512"));
        assert!(bad(&["--smp", "-1"]).contains("not a whole number"));
        assert!(bad(&["--smp"]).contains("--smp needs a value"));
        assert!(bad(&["--gic", "4"]).contains("--gic '4': expected 2 or 3"));
        assert!(bad(&["--virtio-blk", "33"]).contains("32 virtio-mmio slots"));
        assert!(bad(&["--virtio-blk", "x"]).contains("not a whole number"));
        assert!(bad(&["--timeout", "0"]).contains("positive number"));
        assert!(bad(&["--timeout", "soon"]).contains("positive number"));
        assert!(bad(&["--timeout", "inf"]).contains("positive number"));
        assert!(bad(&["--cpu", ""]).contains("CPU model"));
        assert!(bad(&["--image="]).contains("needs a path"));
        assert!(bad(&["--append", "a\nb"]).contains("one line"));
        assert!(bad(&["--frobnicate"]).contains("unknown option '--frobnicate'"));
        assert!(bad(&["--gdb=yes"]).contains("unknown option"));
        assert!(bad(&["list"]).contains("--append"));
        assert!(bad(&["--gic", "2", "--smp", "9"]).contains("at most 8"));
        assert_eq!(run(&["--gic", "2", "--smp", "8"]).smp, 8);
    }

    #[test]
    fn virtio_transport_values() {
        assert_eq!(run(&[]).virtio_transport, VirtioTransport::Mmio);
        for (word, t) in [
            ("mmio", VirtioTransport::Mmio),
            ("mmio-modern", VirtioTransport::MmioModern),
            ("pci", VirtioTransport::Pci),
            ("both", VirtioTransport::Both),
            ("none", VirtioTransport::None),
        ] {
            assert_eq!(run(&["--virtio-transport", word]).virtio_transport, t);
            assert_eq!(
                run(&[&format!("--virtio-transport={word}")]).virtio_transport,
                t
            );
            assert_eq!(t.name(), word);
            assert!(VirtioTransport::ALL.contains(&t));
        }
        // The last one given wins, as for every option.
        let o = run(&["--virtio-transport", "pci", "--virtio-transport", "none"]);
        assert_eq!(o.virtio_transport, VirtioTransport::None);
        for b in ["", "MMIO", "mmio2", "modern", "virtio-mmio", "pcie", "off"] {
            assert_eq!(
                bad(&["--virtio-transport", b]),
                format!("--virtio-transport '{b}': expected mmio, mmio-modern, pci, both or none")
            );
        }
        assert!(bad(&["--virtio-transport"]).contains("--virtio-transport needs a value"));
    }

    #[test]
    fn virtio_blk_shares_the_mmio_slots_with_the_default_devices() {
        assert_eq!(run(&["--virtio-blk", "27"]).virtio_blk, 27);
        let e = bad(&["--virtio-blk", "28"]);
        assert_eq!(
            e,
            "--virtio-blk 28 with --virtio-transport mmio (the default): the default devices \
             take 5 of QEMU virt's 32 virtio-mmio slots, so at most 27 more drives \
             (--virtio-transport pci or none leaves all 32 to --virtio-blk)"
        );
        for t in ["mmio", "mmio-modern", "both"] {
            assert_eq!(
                run(&["--virtio-transport", t, "--virtio-blk", "27"]).virtio_blk,
                27
            );
            // Whatever the order of the options.
            let e = bad(&["--virtio-blk", "32", "--virtio-transport", t]);
            assert!(e.contains(&format!("with --virtio-transport {t}")), "{e}");
            assert!(e.contains("at most 27 more"), "{e}");
        }
        for t in ["pci", "none"] {
            assert_eq!(
                run(&["--virtio-transport", t, "--virtio-blk", "32"]).virtio_blk,
                32
            );
        }
        assert!(bad(&["--virtio-transport", "none", "--virtio-blk", "33"])
            .contains("32 virtio-mmio slots"));
    }

    #[test]
    fn help_says_what_is_attached_and_how_to_turn_it_off() {
        for words in [
            "Default devices:",
            "one virtio-blk",
            "8 MiB",
            "one virtio-rng",
            "virtconsole",
            "two virtio-net NICs",
            "--virtio-transport none attaches none of them",
            "-global virtio-mmio.force-legacy=false",
            "27 with mmio, mmio-modern or both",
        ] {
            assert!(HELP.contains(words), "--help lacks {words:?}");
        }
    }

    #[test]
    fn ktap_and_matrix_options() {
        let o = run(&["--ktap", "r.ktap", "--tap", "r.tap"]);
        assert_eq!(o.ktap, Some(PathBuf::from("r.ktap")));
        assert!(bad(&["--ktap", "r", "--tap", "r"]).contains("--ktap and --tap name the same file"));
        assert!(
            bad(&["--ktap", "r", "--junit", "r"]).contains("--ktap and --junit name the same file")
        );
        assert!(bad(&["--ktap="]).contains("--ktap needs a file name"));
        assert_eq!(
            run(&["--matrix"]).matrix,
            Some(PathBuf::from(DEFAULT_MATRIX_DIR))
        );
        assert_eq!(
            run(&["--matrix", "docs"]).matrix,
            Some(PathBuf::from("docs"))
        );
        assert_eq!(run(&["--matrix=m"]).matrix, Some(PathBuf::from("m")));
        let o = run(&[
            "--matrix",
            "--smp",
            "2",
            "--matrix-columns",
            "plain, model-*",
        ]);
        assert_eq!((o.matrix, o.smp), (Some(PathBuf::from("matrix")), 2));
        assert_eq!(o.matrix_columns, ["plain", "model-*"]);
        assert!(bad(&["--matrix-columns", "plain"]).contains("goes with --matrix"));
        assert!(bad(&["--matrix", "--matrix-columns", "a,,b"]).contains("separated by commas"));
        assert!(bad(&["--matrix="]).contains("--matrix needs a file name"));
        for (opt, val) in [
            ("--tap", Some("t")),
            ("--junit", Some("j")),
            ("--ktap", Some("k")),
            ("--bench", None),
            ("--gdb", None),
            ("--hyp", Some("model")),
            ("--image", Some("i.bin")),
        ] {
            let mut args = vec!["--matrix", "m", opt];
            args.extend(val);
            let e = bad(&args);
            assert!(e.starts_with(&format!("{opt} with --matrix: ")), "{e}");
        }
        // --hyp plain is the default, so it is no conflict.
        assert!(run(&["--matrix", "m", "--hyp", "plain"]).matrix.is_some());
        for words in ["--ktap FILE", "--matrix [DIR]", "--matrix-columns LIST"] {
            assert!(HELP.contains(words), "--help lacks {words}");
        }
    }

    #[test]
    fn mem_sizes() {
        for good in ["128M", "2G", "1024", "256m", "1T", "524288k"] {
            assert_eq!(validate_mem(good), Ok(()), "{good}");
        }
        for b in ["", "M", "0", "0M", "2GB", "1.5G", "-1G", "12 M", "big"] {
            assert!(validate_mem(b).is_err(), "{b:?} accepted");
        }
    }

    #[test]
    fn silence_and_its_default() {
        assert_eq!(run(&[]).effective_silence(), Some(DEFAULT_SILENCE));
        assert_eq!(run(&["--gdb"]).effective_silence(), None);
        assert_eq!(
            run(&["--silence", "1.5"]).effective_silence(),
            Some(Duration::from_millis(1500))
        );
        assert!(bad(&["--silence", "0"]).contains("--silence '0': expected a positive"));
        assert!(HELP.contains("--silence S"));
    }

    #[test]
    fn what_qemu_or_hypmodel_would_refuse_later_is_refused_now() {
        assert_eq!(mem_mib("512k"), Some(0));
        assert_eq!(mem_mib("8"), Some(8));
        assert_eq!(mem_mib("2G"), Some(2048));
        assert_eq!(mem_mib("1T"), Some(1 << 20));
        assert!(bad(&["--mem", "1"]).contains("needs at least 8M"));
        assert!(bad(&["--mem", "7M"]).contains("needs at least 8M"));
        assert_eq!(run(&["--mem", "8M"]).mem, "8M");
        assert!(bad(&["--hyp", "model", "--mem", "16M"]).contains("at least 24M with --hyp model"));
        assert_eq!(run(&["--hyp", "model", "--mem", "24M"]).mem, "24M");
        for cpu in ["cortex-a15", "cortex-a7", "cortex-m3", "arm926"] {
            assert!(bad(&["--cpu", cpu]).contains("has no AArch64"), "{cpu}");
        }
        for cpu in [
            "max",
            "cortex-a53",
            "cortex-a72",
            "a64fx",
            "neoverse-n1",
            "nosuch",
        ] {
            assert_eq!(run(&["--cpu", cpu]).cpu, cpu);
        }
        assert!(bad(&["--hyp", "model", "--smp", "9"]).contains("at most 8 vCPUs"));
        assert_eq!(run(&["--hyp", "model", "--smp", "8"]).smp, 8);
        let long = "x".repeat(2049);
        assert!(bad(&["--hyp", "model", "--append", &long]).contains("at most 2048"));
        assert_eq!(run(&["--append", &long]).append.len(), 2049);
        assert!(bad(&["--tap", "r", "--junit", "r"]).contains("give each its own file"));
    }
}
