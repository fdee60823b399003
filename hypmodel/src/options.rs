//! `hypmodel.*` options from `/chosen/bootargs`, and the guest's part of the command line.
//!
//! Grammar: whitespace-separated words. Words before a lone `--` that start with
//! `hypmodel.` are hypmodel's; everything after `--` is the guest's command line, verbatim.
//! Without `--`, the guest gets every word that is not a `hypmodel.` option. An unknown
//! `hypmodel.` option or value is an error: a typo in a mutant name must not silently run
//! the correct model.

use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Android13,
    Android14,
    Android16,
    Upstream,
    Kvm,
    /// Upstream pKVM (7.2+) as measured with a protected VM on a real host under emulation: memory
    /// sharing, no MMIO guard, MEM_SHARE of a device IPA answered with an abort.
    Pkvm,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::Android13,
        Profile::Android14,
        Profile::Android16,
        Profile::Upstream,
        Profile::Kvm,
        Profile::Pkvm,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Profile::Android13 => "android13",
            Profile::Android14 => "android14",
            Profile::Android16 => "android16",
            Profile::Upstream => "upstream",
            Profile::Kvm => "kvm",
            Profile::Pkvm => "pkvm",
        }
    }
    pub fn from_name(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// One realistic bug each; see the table in hypmodel/README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    GuardOff,
    SilentDrop,
    WrongDfsc,
    BadFar,
    MapNoop,
    MapNeighbour,
    MapAcceptsRam,
    MapAcceptsMisaligned,
    UnmapNoop,
    UnmapInverted,
    PerCpuGuard,
    GranuleMismatch,
    NoSyndromeForward,
    WnrLeak,
    IsvLeak,
    ElrAdvanced,
    DestClobbered,
    InfoHostPage,
    EnrollResets,
    MapTwiceEinval,
    UnmapUnmappedOk,
    MapBeyondIpa,
    ShareTwiceOk,
    ShareMmioOk,
    ShareMisalignedOk,
    UnsharePrivateOk,
    UnshareRefused,
    ShareX1Zero,
    MeminfoIgnoresArgs,
    NoSignExtend,
    Load64As32,
    SecondaryUnguarded,
    ConsoleDropped,
    MapReturnsOne,
    RguardFirstOnly,
    LastByteUnchecked,
    ShareIgnored,
    DmaPrivateThrough,
    UnshareMisalignedOk,
    RangeX1Zero,
    EnrollTwiceRefused,
    ForwardWrongPage,
    RangeX1Overcount,
}

impl Mutant {
    pub const ALL: [Mutant; 43] = [
        Mutant::GuardOff,
        Mutant::SilentDrop,
        Mutant::WrongDfsc,
        Mutant::BadFar,
        Mutant::MapNoop,
        Mutant::MapNeighbour,
        Mutant::MapAcceptsRam,
        Mutant::MapAcceptsMisaligned,
        Mutant::UnmapNoop,
        Mutant::UnmapInverted,
        Mutant::PerCpuGuard,
        Mutant::GranuleMismatch,
        Mutant::NoSyndromeForward,
        Mutant::WnrLeak,
        Mutant::IsvLeak,
        Mutant::ElrAdvanced,
        Mutant::DestClobbered,
        Mutant::InfoHostPage,
        Mutant::EnrollResets,
        Mutant::MapTwiceEinval,
        Mutant::UnmapUnmappedOk,
        Mutant::MapBeyondIpa,
        Mutant::ShareTwiceOk,
        Mutant::ShareMmioOk,
        Mutant::ShareMisalignedOk,
        Mutant::UnsharePrivateOk,
        Mutant::UnshareRefused,
        Mutant::ShareX1Zero,
        Mutant::MeminfoIgnoresArgs,
        Mutant::NoSignExtend,
        Mutant::Load64As32,
        Mutant::SecondaryUnguarded,
        Mutant::ConsoleDropped,
        Mutant::MapReturnsOne,
        Mutant::RguardFirstOnly,
        Mutant::LastByteUnchecked,
        Mutant::ShareIgnored,
        Mutant::DmaPrivateThrough,
        Mutant::UnshareMisalignedOk,
        Mutant::RangeX1Zero,
        Mutant::EnrollTwiceRefused,
        Mutant::ForwardWrongPage,
        Mutant::RangeX1Overcount,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Mutant::GuardOff => "guard-off",
            Mutant::SilentDrop => "silent-drop",
            Mutant::WrongDfsc => "wrong-dfsc",
            Mutant::BadFar => "bad-far",
            Mutant::MapNoop => "map-noop",
            Mutant::MapNeighbour => "map-neighbour",
            Mutant::MapAcceptsRam => "map-accepts-ram",
            Mutant::MapAcceptsMisaligned => "map-accepts-misaligned",
            Mutant::UnmapNoop => "unmap-noop",
            Mutant::UnmapInverted => "unmap-inverted",
            Mutant::PerCpuGuard => "per-cpu-guard",
            Mutant::GranuleMismatch => "granule-mismatch",
            Mutant::NoSyndromeForward => "no-syndrome-forward",
            Mutant::WnrLeak => "wnr-leak",
            Mutant::IsvLeak => "isv-leak",
            Mutant::ElrAdvanced => "elr-advanced",
            Mutant::DestClobbered => "dest-clobbered",
            Mutant::InfoHostPage => "info-host-page",
            Mutant::EnrollResets => "enroll-resets",
            Mutant::MapTwiceEinval => "map-twice-einval",
            Mutant::UnmapUnmappedOk => "unmap-unmapped-ok",
            Mutant::MapBeyondIpa => "map-beyond-ipa",
            Mutant::ShareTwiceOk => "share-twice-ok",
            Mutant::ShareMmioOk => "share-mmio-ok",
            Mutant::ShareMisalignedOk => "share-misaligned-ok",
            Mutant::UnsharePrivateOk => "unshare-private-ok",
            Mutant::UnshareRefused => "unshare-refused",
            Mutant::ShareX1Zero => "share-x1-zero",
            Mutant::MeminfoIgnoresArgs => "meminfo-ignores-args",
            Mutant::NoSignExtend => "no-sign-extend",
            Mutant::Load64As32 => "load64-as-32",
            Mutant::SecondaryUnguarded => "secondary-unguarded",
            Mutant::ConsoleDropped => "console-dropped",
            Mutant::MapReturnsOne => "map-returns-one",
            Mutant::RguardFirstOnly => "rguard-first-only",
            Mutant::LastByteUnchecked => "last-byte-unchecked",
            Mutant::ShareIgnored => "share-ignored",
            Mutant::DmaPrivateThrough => "dma-private-through",
            Mutant::UnshareMisalignedOk => "unshare-misaligned-ok",
            Mutant::RangeX1Zero => "range-x1-zero",
            Mutant::EnrollTwiceRefused => "enroll-twice-refused",
            Mutant::ForwardWrongPage => "forward-wrong-page",
            Mutant::RangeX1Overcount => "range-x1-overcount",
        }
    }
    pub fn from_name(s: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub profile: Profile,
    /// Protection granule in bytes: 4096, 16384 or 65536.
    pub granule: u64,
    pub mutant: Option<Mutant>,
    /// `hypmodel.enrolled=boot`: enrolled before the guest's first instruction.
    pub enrolled_at_boot: bool,
    pub trace: bool,
    /// `hypmodel.chaos=SEED`: misbehave at random, reproducibly per seed (see `chaos.rs`).
    pub chaos: Option<u64>,
    /// `hypmodel.range-max=N` (N >= 1): each MMIO_RGUARD_MAP/UNMAP does at most N granules
    /// and answers 0 with x1 = the number it did, so the guest must resume (§10.1: the
    /// hypervisor may stop early). `None`: a range call does its whole run.
    pub range_max: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            profile: Profile::Android14,
            granule: 4096,
            mutant: None,
            enrolled_at_boot: false,
            trace: false,
            chaos: None,
            range_max: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptError<'a> {
    UnknownOption(&'a str),
    BadValue(&'a str),
    GuestArgsTooLong,
}

impl fmt::Display for OptError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptError::UnknownOption(w) => write!(f, "unknown option '{w}'"),
            OptError::BadValue(w) => write!(f, "bad value in '{w}'"),
            OptError::GuestArgsTooLong => write!(f, "guest command line too long"),
        }
    }
}

fn parse_granule(v: &str) -> Option<u64> {
    match v {
        "4k" | "4K" | "4096" => Some(4096),
        "16k" | "16K" | "16384" => Some(16384),
        "64k" | "64K" | "65536" => Some(65536),
        _ => None,
    }
}

fn apply<'a>(o: &mut Options, word: &'a str) -> Result<(), OptError<'a>> {
    let (key, val) = match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    };
    match (key, val) {
        ("hypmodel.profile", Some(v)) => {
            o.profile = Profile::from_name(v).ok_or(OptError::BadValue(word))?
        }
        ("hypmodel.granule", Some(v)) => {
            o.granule = parse_granule(v).ok_or(OptError::BadValue(word))?
        }
        ("hypmodel.mutant", Some("none")) => o.mutant = None,
        ("hypmodel.mutant", Some(v)) => {
            o.mutant = Some(Mutant::from_name(v).ok_or(OptError::BadValue(word))?)
        }
        ("hypmodel.enrolled", Some("boot")) => o.enrolled_at_boot = true,
        ("hypmodel.enrolled", Some("guest")) => o.enrolled_at_boot = false,
        ("hypmodel.trace", None | Some("1") | Some("on")) => o.trace = true,
        ("hypmodel.trace", Some("0") | Some("off")) => o.trace = false,
        ("hypmodel.chaos", Some(v)) => {
            o.chaos = Some(v.parse().map_err(|_| OptError::BadValue(word))?)
        }
        ("hypmodel.range-max", Some(v)) => {
            o.range_max = Some(
                v.parse()
                    .ok()
                    .filter(|&n: &u64| n >= 1)
                    .ok_or(OptError::BadValue(word))?,
            )
        }
        (
            "hypmodel.profile" | "hypmodel.granule" | "hypmodel.mutant" | "hypmodel.enrolled"
            | "hypmodel.trace" | "hypmodel.chaos" | "hypmodel.range-max",
            _,
        ) => return Err(OptError::BadValue(word)),
        _ => return Err(OptError::UnknownOption(word)),
    }
    Ok(())
}

/// Parses `bootargs`; writes the guest's command line into `guest` and returns its length.
pub fn parse<'a>(bootargs: &'a str, guest: &mut [u8]) -> Result<(Options, usize), OptError<'a>> {
    let mut o = Options::default();
    let mut len = 0usize;
    let mut push = |w: &str, len: &mut usize| -> Result<(), OptError<'a>> {
        let sep = usize::from(*len > 0);
        if *len + sep + w.len() > guest.len() {
            return Err(OptError::GuestArgsTooLong);
        }
        if sep == 1 {
            guest[*len] = b' ';
        }
        guest[*len + sep..*len + sep + w.len()].copy_from_slice(w.as_bytes());
        *len += sep + w.len();
        Ok(())
    };
    // Find a lone `--` word.
    let mut split_at = None;
    let mut pos = 0;
    for w in bootargs.split(|c: char| c.is_ascii_whitespace()) {
        if w == "--" {
            split_at = Some(pos);
            break;
        }
        pos += w.len() + 1;
    }
    match split_at {
        Some(at) => {
            for w in bootargs[..at].split_ascii_whitespace() {
                if w.starts_with("hypmodel.") {
                    apply(&mut o, w)?;
                } else {
                    return Err(OptError::UnknownOption(w));
                }
            }
            let rest = bootargs[at + 2..].trim_matches(|c: char| c.is_ascii_whitespace());
            if rest.len() > guest.len() {
                return Err(OptError::GuestArgsTooLong);
            }
            guest[..rest.len()].copy_from_slice(rest.as_bytes());
            len = rest.len();
        }
        None => {
            for w in bootargs.split_ascii_whitespace() {
                if w.starts_with("hypmodel.") {
                    apply(&mut o, w)?;
                } else {
                    push(w, &mut len)?;
                }
            }
        }
    }
    Ok((o, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<(Options, String), String> {
        let mut buf = [0u8; 64];
        match parse(s, &mut buf) {
            Ok((o, n)) => Ok((o, String::from_utf8(buf[..n].to_vec()).unwrap())),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults() {
        let (o, g) = p("").unwrap();
        assert_eq!(o, Options::default());
        assert_eq!(o.profile, Profile::Android14);
        assert_eq!(o.granule, 4096);
        assert_eq!(g, "");
    }

    #[test]
    fn all_options_and_guest_part() {
        let (o, g) = p(
            "hypmodel.profile=android16 hypmodel.granule=64k hypmodel.mutant=bad-far \
                        hypmodel.enrolled=boot hypmodel.trace -- only=guard:*  log=debug ",
        )
        .unwrap();
        assert_eq!(o.profile, Profile::Android16);
        assert_eq!(o.granule, 65536);
        assert_eq!(o.mutant, Some(Mutant::BadFar));
        assert!(o.enrolled_at_boot && o.trace);
        assert_eq!(g, "only=guard:*  log=debug");
    }

    #[test]
    fn hypmodel_words_after_separator_belong_to_guest() {
        let (o, g) = p("-- hypmodel.profile=kvm x").unwrap();
        assert_eq!(o.profile, Profile::Android14);
        assert_eq!(g, "hypmodel.profile=kvm x");
    }

    #[test]
    fn without_separator_guest_gets_the_rest() {
        let (o, g) = p("trace hypmodel.profile=upstream only=x").unwrap();
        assert_eq!(o.profile, Profile::Upstream);
        assert_eq!(g, "trace only=x");
    }

    #[test]
    fn errors() {
        assert!(p("hypmodel.mutant=guard-of")
            .unwrap_err()
            .contains("bad value"));
        assert!(p("hypmodel.profile=android15").is_err());
        assert!(p("hypmodel.granule=8k").is_err());
        assert!(p("hypmodel.nosuch=1")
            .unwrap_err()
            .contains("unknown option"));
        assert!(p("stray -- x")
            .unwrap_err()
            .contains("unknown option 'stray'"));
        assert_eq!(
            p(&format!("-- {}", "a".repeat(65))).unwrap_err(),
            "guest command line too long"
        );
    }

    #[test]
    fn chaos_seed() {
        assert_eq!(p("hypmodel.chaos=42").unwrap().0.chaos, Some(42));
        assert_eq!(p("").unwrap().0.chaos, None);
        assert!(p("hypmodel.chaos=x").unwrap_err().contains("bad value"));
        assert!(p("hypmodel.chaos").unwrap_err().contains("bad value"));
    }

    #[test]
    fn range_max() {
        assert_eq!(p("").unwrap().0.range_max, None);
        assert_eq!(p("hypmodel.range-max=1").unwrap().0.range_max, Some(1));
        assert_eq!(
            p("hypmodel.profile=android16 hypmodel.range-max=300 -- x")
                .unwrap()
                .0
                .range_max,
            Some(300)
        );
        for bad in ["0", "-1", "x", "", "1.5", "18446744073709551616"] {
            assert!(
                p(&format!("hypmodel.range-max={bad}"))
                    .unwrap_err()
                    .contains("bad value"),
                "{bad}"
            );
        }
        assert!(p("hypmodel.range-max").unwrap_err().contains("bad value"));
    }

    #[test]
    fn every_mutant_name_round_trips() {
        for m in Mutant::ALL {
            let (o, _) = p(&format!("hypmodel.mutant={}", m.name())).unwrap();
            assert_eq!(o.mutant, Some(m));
        }
        for pr in Profile::ALL {
            assert_eq!(Profile::from_name(pr.name()), Some(pr));
        }
    }
}
