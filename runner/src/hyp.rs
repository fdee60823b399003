//! `--hyp`: what runs below the guest. `plain` is QEMU alone; `model[:...]` is hypmodel,
//! the reference EL2 hypervisor, with the QEMU command line hypmodel/README.md fixes.

use std::fmt;

/// hypmodel's profiles (hypmodel/README.md).
pub const MODEL_PROFILES: &[&str] = &[
    "android13",
    "android14",
    "android16",
    "upstream",
    "kvm",
    "pkvm",
];
/// hypmodel's granules.
pub const MODEL_GRANULES: &[&str] = &["4k", "16k", "64k"];
/// hypmodel's mutants: one realistic bug each (hypmodel/README.md).
pub const MODEL_MUTANTS: &[&str] = &[
    "guard-off",
    "silent-drop",
    "wrong-dfsc",
    "bad-far",
    "map-noop",
    "map-neighbour",
    "map-accepts-ram",
    "map-accepts-misaligned",
    "unmap-noop",
    "unmap-inverted",
    "per-cpu-guard",
    "granule-mismatch",
    "no-syndrome-forward",
    "wnr-leak",
    "isv-leak",
    "elr-advanced",
    "dest-clobbered",
    "info-host-page",
    "enroll-resets",
    "map-twice-einval",
    "unmap-unmapped-ok",
    "map-beyond-ipa",
    "share-twice-ok",
    "share-mmio-ok",
    "share-misaligned-ok",
    "unshare-private-ok",
    "unshare-refused",
    "share-x1-zero",
    "meminfo-ignores-args",
    "no-sign-extend",
    "load64-as-32",
    "secondary-unguarded",
    "console-dropped",
    "map-returns-one",
    "rguard-first-only",
    "unshare-misaligned-ok",
    "share-ignored",
    "dma-private-through",
    "range-x1-zero",
    "enroll-twice-refused",
    "forward-wrong-page",
    "range-x1-overcount",
];

/// Where hypmodel expects the guest Image (`-device loader,...,addr=`).
pub const MODEL_STAGING_ADDR: &str = "0x41000000";
/// hypmodel's vCPU limit (`hypmodel::vm::MAX_CPUS`): with more CPUs in QEMU's tree it
/// runs the first 8 and the guest sees a tree it trims without a word.
pub const MODEL_MAX_CPUS: u32 = 8;
/// hypmodel's buffer for the guest's command line (`GUEST_ARGS` in hypmodel/src/el2/boot.rs):
/// a longer one is a FATAL of hypmodel's after QEMU has started.
pub const MODEL_MAX_GUEST_ARGS: usize = 2048;

/// Refuse what hypmodel cannot run: more than [`MODEL_MAX_CPUS`] CPUs, or a guest command
/// line (the words the runner adds and `append`) over [`MODEL_MAX_GUEST_ARGS`] bytes.
pub fn check_model_limits(spec: &ModelSpec, smp: u32, append: &str) -> Result<(), String> {
    if smp > MODEL_MAX_CPUS {
        return Err(format!(
            "--smp {smp} with --hyp model: hypmodel runs at most {MODEL_MAX_CPUS} vCPUs"
        ));
    }
    let mut guest = spec.guest_args();
    if !append.is_empty() {
        guest.push(append.to_string());
    }
    let len = guest.join(" ").len();
    if len > MODEL_MAX_GUEST_ARGS {
        return Err(format!(
            "--append with --hyp model: the guest command line is {len} bytes; hypmodel \
             passes at most {MODEL_MAX_GUEST_ARGS}"
        ));
    }
    Ok(())
}

/// `--hyp model[:PROFILE][,mutant=NAME][,granule=SIZE][,enrolled=boot][,trace][,chaos=SEED][,range-max=N]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSpec {
    /// `hypmodel.profile=` (hypmodel's default, android14, when absent).
    pub profile: Option<String>,
    /// `hypmodel.mutant=`: the bug to model.
    pub mutant: Option<String>,
    /// `hypmodel.granule=`.
    pub granule: Option<String>,
    /// `hypmodel.enrolled=boot`: enrolled before the guest's first instruction.
    pub enrolled_boot: bool,
    /// `hypmodel.trace`: every hypercall and trapped access.
    pub trace: bool,
    /// `hypmodel.chaos=SEED`: seeded garbage answers (hypmodel/README.md).
    pub chaos: Option<u64>,
    /// `hypmodel.range-max=N` (N >= 1): each range call (android16's RGUARD_MAP/UNMAP) does
    /// at most N granules and says how many in x1, so the guest must resume.
    pub range_max: Option<u64>,
}

/// The hypervisor the guest runs under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Hyp {
    /// Plain QEMU TCG `virt`, EL1 guest.
    #[default]
    Plain,
    /// hypmodel.
    Model(ModelSpec),
    /// A real pKVM host: Debian's arm64 kernel at EL2 under QEMU TCG, running the guest
    /// in a VM of its own ([`crate::pkvm`]).
    Pkvm(PkvmSpec),
}

/// What runs the guest inside the pKVM host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PkvmVm {
    /// A protected VM started by ioguard's VMM (`vmm/`).
    #[default]
    Protected,
    /// An ordinary VM started by ioguard's VMM.
    Ordinary,
    /// An ordinary VM started by Debian's arm64 `qemu-system-aarch64 -accel kvm`.
    Qemu,
}

/// Where the VMM puts RAM and devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PkvmLayout {
    /// QEMU `virt`'s: RAM at 0x4000_0000, PL011, PL031, virtio-mmio.
    #[default]
    Qemu,
    /// crosvm's: RAM at 0x8000_0000, 16550 at 0x3f8, PL030, a restricted DMA pool.
    Crosvm,
}

/// `--hyp pkvm[:protected|:ordinary|:qemu][,layout=qemu|crosvm][,cpu=MODEL]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkvmSpec {
    /// What runs the guest.
    pub vm: PkvmVm,
    /// The VMM's layout (not for `:qemu`, which has its own).
    pub layout: PkvmLayout,
    /// The emulated host's QEMU CPU model: `max` runs pKVM in hVHE mode, `cortex-a72` in
    /// nVHE mode.
    pub cpu: String,
}

impl Default for PkvmSpec {
    fn default() -> PkvmSpec {
        PkvmSpec {
            vm: PkvmVm::default(),
            layout: PkvmLayout::default(),
            cpu: String::from("max"),
        }
    }
}

/// Host CPU models that run pKVM here: an EL2 with the extensions upstream pKVM needs
/// (`max` and `neoverse-n1` initialise it in hVHE mode, `cortex-a72` in nVHE mode).
pub const PKVM_CPUS: &[&str] = &["max", "cortex-a72", "neoverse-n1"];

const PKVM_SYNTAX: &str = "--hyp pkvm[:protected|:ordinary|:qemu][,layout=qemu|crosvm][,cpu=MODEL]";

impl PkvmSpec {
    fn parse(rest: &str) -> Result<PkvmSpec, String> {
        let mut p = PkvmSpec::default();
        for (i, item) in rest.split(',').enumerate() {
            match (i, item.split_once('=')) {
                (0, None) => {
                    p.vm = match item {
                        "protected" => PkvmVm::Protected,
                        "ordinary" => PkvmVm::Ordinary,
                        "qemu" => PkvmVm::Qemu,
                        _ => {
                            return Err(format!(
                        "--hyp pkvm:{item}: the VM is protected, ordinary or qemu ({PKVM_SYNTAX})"
                    ))
                        }
                    }
                }
                (_, Some(("layout", v))) => {
                    p.layout = match v {
                        "qemu" => PkvmLayout::Qemu,
                        "crosvm" => PkvmLayout::Crosvm,
                        _ => {
                            return Err(format!("--hyp pkvm: layout={v}: expected qemu or crosvm"))
                        }
                    }
                }
                (_, Some(("cpu", v))) if PKVM_CPUS.contains(&v) => p.cpu = v.to_string(),
                (_, Some(("cpu", v))) => {
                    return Err(format!(
                        "--hyp pkvm: cpu={v}: the host CPU is one of {} (an EL2 that runs pKVM)",
                        PKVM_CPUS.join(", ")
                    ))
                }
                _ => return Err(format!("--hyp pkvm: cannot read '{item}' ({PKVM_SYNTAX})")),
            }
        }
        if p.vm == PkvmVm::Qemu && p.layout != PkvmLayout::Qemu {
            return Err(String::from(
                "--hyp pkvm:qemu: QEMU inside the host has its own layout (layout= is for the VMM)",
            ));
        }
        Ok(p)
    }
}

impl Hyp {
    /// The option's first word.
    pub fn name(&self) -> &'static str {
        match self {
            Hyp::Plain => "plain",
            Hyp::Model(_) => "model",
            Hyp::Pkvm(_) => "pkvm",
        }
    }

    /// Parses the value of `--hyp`.
    pub fn parse(v: &str) -> Result<Hyp, String> {
        let (kind, rest) = match v.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => match v.split_once(',') {
                Some((k, r)) => (k, Some(r)),
                None => (v, None),
            },
        };
        match (kind, rest) {
            ("plain", None) => Ok(Hyp::Plain),
            ("pkvm", None) => Ok(Hyp::Pkvm(PkvmSpec::default())),
            ("pkvm", Some(rest)) => PkvmSpec::parse(rest).map(Hyp::Pkvm),
            ("model", None) => Ok(Hyp::Model(ModelSpec::default())),
            ("model", Some(rest)) => ModelSpec::parse(rest).map(Hyp::Model),
            ("plain", Some(_)) => Err(format!("--hyp {kind} takes no parameters")),
            _ => Err(format!("--hyp '{v}': expected plain, model[:PROFILE][,mutant=NAME][,granule=SIZE][,enrolled=boot][,trace][,chaos=SEED][,range-max=N] or pkvm[:protected|:ordinary|:qemu][,layout=qemu|crosvm][,cpu=MODEL]")),
        }
    }
}

fn one_of(what: &str, v: &str, allowed: &[&str]) -> Result<String, String> {
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "--hyp model: unknown {what} '{v}' (known: {})",
            allowed.join(", ")
        ))
    }
}

impl ModelSpec {
    fn parse(rest: &str) -> Result<ModelSpec, String> {
        let mut m = ModelSpec::default();
        for (i, item) in rest.split(',').enumerate() {
            match item.split_once('=') {
                None if item == "trace" => m.trace = true,
                None if i == 0 => m.profile = Some(one_of("profile", item, MODEL_PROFILES)?),
                Some(("profile", v)) => m.profile = Some(one_of("profile", v, MODEL_PROFILES)?),
                Some(("mutant", v)) => m.mutant = Some(one_of("mutant", v, MODEL_MUTANTS)?),
                Some(("granule", v)) => m.granule = Some(one_of("granule", v, MODEL_GRANULES)?),
                Some(("enrolled", "boot")) => m.enrolled_boot = true,
                Some(("chaos", v)) => {
                    m.chaos = Some(v.parse().map_err(|_| {
                        format!("--hyp model: chaos={v}: the seed is a whole number")
                    })?)
                }
                Some(("range-max", v)) => {
                    m.range_max = Some(v.parse().ok().filter(|&n: &u64| n >= 1).ok_or_else(|| {
                        format!(
                            "--hyp model: range-max={v}: the most granules one range call does \
                             is a whole number of at least 1"
                        )
                    })?)
                }
                _ => return Err(format!("--hyp model: cannot read '{item}' (keys: profile, mutant, granule, enrolled=boot, trace, chaos=SEED, range-max=N)")),
            }
        }
        Ok(m)
    }

    /// hypmodel's words on its command line (before the `--` that starts the guest's).
    pub fn hypmodel_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(p) = &self.profile {
            a.push(format!("hypmodel.profile={p}"));
        }
        if let Some(g) = &self.granule {
            a.push(format!("hypmodel.granule={g}"));
        }
        if let Some(m) = &self.mutant {
            a.push(format!("hypmodel.mutant={m}"));
        }
        if self.enrolled_boot {
            a.push("hypmodel.enrolled=boot".to_string());
        }
        if self.trace {
            a.push("hypmodel.trace".to_string());
        }
        if let Some(seed) = self.chaos {
            a.push(format!("hypmodel.chaos={seed}"));
        }
        if let Some(n) = self.range_max {
            a.push(format!("hypmodel.range-max={n}"));
        }
        a
    }

    /// hypmodel's whole command line for a guest whose own is `guest_append`: hypmodel's
    /// words, `--`, the guest words the model needs, then `guest_append` (hypmodel/README.md).
    pub fn bootargs(&self, guest_append: &str) -> String {
        let mut words = self.hypmodel_args();
        words.push("--".to_string());
        words.extend(self.guest_args());
        if !guest_append.is_empty() {
            words.push(guest_append.to_string());
        }
        words.join(" ")
    }

    /// Guest words the model needs: android13 has android14's feature bits, so the guest
    /// can only be told (DESIGN.md: "android13: only by override").
    pub fn guest_args(&self) -> Vec<String> {
        match self.profile.as_deref() {
            Some("android13") => vec!["ioguard.profile=android13".to_string()],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Hyp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hyp::Model(m) => {
                write!(f, "model")?;
                let words = m.hypmodel_args();
                if !words.is_empty() {
                    write!(f, " ({})", words.join(" "))?;
                }
                Ok(())
            }
            h => f.write_str(h.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pkvm_forms() {
        let p = |v: &str| match Hyp::parse(v) {
            Ok(Hyp::Pkvm(s)) => s,
            other => panic!("{v}: {other:?}"),
        };
        assert_eq!(p("pkvm"), PkvmSpec::default());
        assert_eq!(p("pkvm").cpu, "max");
        assert_eq!(p("pkvm:ordinary").vm, PkvmVm::Ordinary);
        assert_eq!(p("pkvm:qemu").vm, PkvmVm::Qemu);
        let s = p("pkvm:protected,layout=crosvm,cpu=cortex-a72");
        assert_eq!(
            (s.vm, s.layout, s.cpu.as_str()),
            (PkvmVm::Protected, PkvmLayout::Crosvm, "cortex-a72")
        );
        assert_eq!(p("pkvm,layout=crosvm").layout, PkvmLayout::Crosvm);
        assert_eq!(p("pkvm,layout=qemu").layout, PkvmLayout::Qemu);
        let bad = |v: &str| Hyp::parse(v).unwrap_err();
        assert!(bad("pkvm:secret").contains("protected, ordinary or qemu"));
        assert!(bad("pkvm,layout=kvmtool").contains("expected qemu or crosvm"));
        assert!(bad("pkvm,cpu=cortex-a53").contains("max, cortex-a72, neoverse-n1"));
        assert!(bad("pkvm,granule=16k").contains("cannot read 'granule=16k'"));
        assert!(bad("pkvm:qemu,layout=crosvm").contains("its own layout"));
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(Hyp::parse("plain"), Ok(Hyp::Plain));
        assert_eq!(Hyp::parse("model"), Ok(Hyp::Model(ModelSpec::default())));
        let m = match Hyp::parse("model:android16,mutant=guard-off,granule=16k,enrolled=boot,trace")
            .unwrap()
        {
            Hyp::Model(m) => m,
            h => panic!("{h:?}"),
        };
        assert_eq!(m.profile.as_deref(), Some("android16"));
        assert_eq!(m.mutant.as_deref(), Some("guard-off"));
        assert_eq!(m.granule.as_deref(), Some("16k"));
        assert!(m.enrolled_boot && m.trace);
        assert_eq!(
            m.hypmodel_args(),
            [
                "hypmodel.profile=android16",
                "hypmodel.granule=16k",
                "hypmodel.mutant=guard-off",
                "hypmodel.enrolled=boot",
                "hypmodel.trace"
            ]
        );
        // Parameters without a profile.
        let m = match Hyp::parse("model,mutant=bad-far").unwrap() {
            Hyp::Model(m) => m,
            h => panic!("{h:?}"),
        };
        assert_eq!((m.profile, m.mutant.as_deref()), (None, Some("bad-far")));
    }

    #[test]
    fn refuses_what_hypmodel_would_refuse() {
        assert!(Hyp::parse("model:android15")
            .unwrap_err()
            .contains("unknown profile 'android15'"));
        assert!(Hyp::parse("model:android14,mutant=typo")
            .unwrap_err()
            .contains("unknown mutant 'typo'"));
        assert!(Hyp::parse("model,granule=8k")
            .unwrap_err()
            .contains("unknown granule"));
        assert!(Hyp::parse("model,enrolled=later").is_err());
        assert!(Hyp::parse("model,chaos=x").is_err());
        match Hyp::parse("model:android16,chaos=42") {
            Ok(Hyp::Model(m)) => {
                assert_eq!(m.chaos, Some(42));
                assert!(m.hypmodel_args().contains(&"hypmodel.chaos=42".to_string()));
            }
            other => panic!("{other:?}"),
        }
        assert!(Hyp::parse("plain:x").is_err());
        assert!(Hyp::parse("xen").is_err());
    }

    #[test]
    fn range_max() {
        match Hyp::parse("model:android16,range-max=1") {
            Ok(Hyp::Model(m)) => {
                assert_eq!(m.range_max, Some(1));
                assert_eq!(
                    m.hypmodel_args(),
                    ["hypmodel.profile=android16", "hypmodel.range-max=1"]
                );
                assert_eq!(
                    m.bootargs(""),
                    "hypmodel.profile=android16 hypmodel.range-max=1 --"
                );
            }
            other => panic!("{other:?}"),
        }
        match Hyp::parse("model,mutant=range-x1-zero,range-max=300,chaos=3") {
            Ok(Hyp::Model(m)) => {
                assert_eq!((m.range_max, m.chaos), (Some(300), Some(3)));
                assert_eq!(m.mutant.as_deref(), Some("range-x1-zero"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ModelSpec::default().range_max, None, "unlimited by default");
        for bad in ["0", "x", "", "-1", "1.5", "18446744073709551616"] {
            let e = Hyp::parse(&format!("model:android16,range-max={bad}")).unwrap_err();
            assert!(
                e.contains(&format!("range-max={bad}: ")) && e.contains("at least 1"),
                "{bad}: {e}"
            );
        }
        assert!(Hyp::parse("model:android16,range-max")
            .unwrap_err()
            .contains("range-max=N"));
    }

    #[test]
    fn android13_is_told_to_the_guest() {
        let m = ModelSpec {
            profile: Some("android13".into()),
            ..Default::default()
        };
        assert_eq!(m.guest_args(), ["ioguard.profile=android13"]);
        let m = ModelSpec {
            profile: Some("android14".into()),
            ..Default::default()
        };
        assert!(m.guest_args().is_empty());
    }

    #[test]
    fn bootargs_put_hypmodel_words_before_the_guests() {
        let m = ModelSpec {
            profile: Some("android13".into()),
            trace: true,
            ..Default::default()
        };
        assert_eq!(
            m.bootargs("only=guard:*"),
            "hypmodel.profile=android13 hypmodel.trace -- ioguard.profile=android13 only=guard:*"
        );
        assert_eq!(ModelSpec::default().bootargs(""), "--");
    }

    #[test]
    fn model_limits() {
        let m = ModelSpec::default();
        assert_eq!(check_model_limits(&m, 8, ""), Ok(()));
        assert!(check_model_limits(&m, 9, "")
            .unwrap_err()
            .contains("at most 8 vCPUs"));
        let at_limit = "x".repeat(MODEL_MAX_GUEST_ARGS);
        assert_eq!(check_model_limits(&m, 1, &at_limit), Ok(()));
        let e = check_model_limits(&m, 1, &format!("{at_limit}y")).unwrap_err();
        assert!(
            e.contains("2049 bytes") && e.contains("at most 2048"),
            "{e}"
        );
        // The words the runner adds for android13 count too.
        let a13 = ModelSpec {
            profile: Some("android13".into()),
            ..Default::default()
        };
        assert!(check_model_limits(&a13, 1, &at_limit).is_err());
    }

    #[test]
    fn model_limits_match_hypmodel_source() {
        let root = crate::build::repo_root().join("hypmodel/src");
        let vm = std::fs::read_to_string(root.join("vm.rs")).unwrap();
        assert!(
            vm.contains(&format!("pub const MAX_CPUS: usize = {MODEL_MAX_CPUS};")),
            "hypmodel's MAX_CPUS changed: update MODEL_MAX_CPUS"
        );
        let boot = std::fs::read_to_string(root.join("el2/boot.rs")).unwrap();
        assert!(
            boot.contains(&format!("GUEST_ARGS: Mutex<[u8; {MODEL_MAX_GUEST_ARGS}]>")),
            "hypmodel's GUEST_ARGS changed: update MODEL_MAX_GUEST_ARGS"
        );
    }
}
