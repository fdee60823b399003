//! The access matrix of `guard: access-forms`: every form of access on every state a
//! page can be in, and what a hypervisor of each profile must do with it. Pure: the
//! suite performs the accesses, this says which outcome is right.

use crate::hyp::profile::{NoSyndrome, Profile};
use core::fmt;

/// A form of access, by instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `ldr` of 1, 2, 4 or 8 bytes (`ldrb`, `ldrh`, `ldr w`, `ldr x`).
    Load(u8),
    /// `ldrsb`, `ldrsh`, `ldrsw` into a 64-bit register.
    LoadSigned(u8),
    /// `str` of 1, 2, 4 or 8 bytes.
    Store(u8),
    /// `ldp` / `stp` of two doublewords: no valid syndrome.
    LoadPair,
    StorePair,
    /// An `ldp` whose first doubleword is the last of a registered granule and whose
    /// second is the first of the next, unregistered one.
    PairAcross,
}

/// The forms tried on every page state (`PairAcross` needs a granule boundary).
pub const FORMS: [Form; 13] = [
    Form::Load(1),
    Form::Load(2),
    Form::Load(4),
    Form::Load(8),
    Form::LoadSigned(1),
    Form::LoadSigned(2),
    Form::LoadSigned(4),
    Form::Store(1),
    Form::Store(2),
    Form::Store(4),
    Form::Store(8),
    Form::LoadPair,
    Form::StorePair,
];

impl Form {
    pub fn is_store(self) -> bool {
        matches!(self, Self::Store(_) | Self::StorePair)
    }

    /// A pair access: the syndrome is not valid, so pKVM cannot emulate it.
    pub fn is_pair(self) -> bool {
        matches!(self, Self::LoadPair | Self::StorePair | Self::PairAcross)
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |n: &u8| match n {
            1 => "b",
            2 => "h",
            4 => " w",
            _ => " x",
        };
        match self {
            Self::Load(n) => write!(f, "ldr{}", size(n)),
            Self::LoadSigned(n) => write!(f, "ldrs{}", size(n).trim()),
            Self::Store(n) => write!(f, "str{}", size(n)),
            Self::LoadPair => write!(f, "ldp"),
            Self::StorePair => write!(f, "stp"),
            Self::PairAcross => write!(f, "ldp across granules"),
        }
    }
}

/// The state of the page accessed, and which CPU accesses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    NeverRegistered,
    Registered,
    AfterUnmap,
    /// The granule after a registered one.
    Neighbour,
    /// Registered on CPU 0, accessed from CPU 1.
    RegisteredOtherCpu,
    /// Never registered, accessed from CPU 1.
    NeverRegisteredOtherCpu,
}

impl State {
    /// Whether the guest registered the page (and still holds it).
    pub fn registered(self) -> bool {
        matches!(self, Self::Registered | Self::RegisteredOtherCpu)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NeverRegistered => "never registered",
            Self::Registered => "registered",
            Self::AfterUnmap => "after UNMAP",
            Self::Neighbour => "the granule after a registered one",
            Self::RegisteredOtherCpu => "registered on CPU 0, from CPU 1",
            Self::NeverRegisteredOtherCpu => "never registered, from CPU 1",
        })
    }
}

/// What a correct hypervisor does with an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Reaches the device.
    Forwarded,
    /// pKVM's injected abort, exactly.
    Refused,
    /// Not tried: the outcome is the VMM's choice (it may stop the VM).
    NotTried,
}

/// What `profile`'s hypervisor must do with `form` on a page in `state`. A pair access
/// follows the no-syndrome rule whatever the page; anything else is forwarded on a
/// registered page, refused on any other where there is a guard, and forwarded
/// everywhere where there is none.
pub fn expect(form: Form, state: State, profile: Profile) -> Expect {
    if form.is_pair() {
        return match profile.no_syndrome() {
            NoSyndrome::Aborts => Expect::Refused,
            NoSyndrome::Forwarded => Expect::Forwarded,
            NoSyndrome::VmmDecides => Expect::NotTried,
        };
    }
    if profile.has_guard() && !state.registered() {
        Expect::Refused
    } else {
        Expect::Forwarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn the_matrix_per_profile() {
        let s = State::NeverRegistered;
        assert_eq!(
            expect(Form::Load(4), s, Profile::Android14),
            Expect::Refused
        );
        assert_eq!(
            expect(Form::Load(4), State::Registered, Profile::Android14),
            Expect::Forwarded
        );
        assert_eq!(
            expect(Form::Store(8), State::RegisteredOtherCpu, Profile::Upstream),
            Expect::Forwarded
        );
        for st in [
            State::AfterUnmap,
            State::Neighbour,
            State::NeverRegisteredOtherCpu,
        ] {
            assert_eq!(
                expect(Form::LoadSigned(1), st, Profile::Android16),
                Expect::Refused
            );
            assert_eq!(
                expect(Form::LoadSigned(1), st, Profile::Pkvm),
                Expect::Forwarded
            );
        }
        assert_eq!(
            expect(Form::LoadPair, State::Registered, Profile::Android14),
            Expect::Refused
        );
        assert_eq!(
            expect(Form::PairAcross, State::Registered, Profile::Pkvm),
            Expect::Refused
        );
        assert_eq!(expect(Form::StorePair, s, Profile::None), Expect::Forwarded);
        assert_eq!(expect(Form::StorePair, s, Profile::Kvm), Expect::NotTried);
        assert_eq!(expect(Form::Load(1), s, Profile::Kvm), Expect::Forwarded);
    }

    #[test]
    fn names() {
        let names: alloc::vec::Vec<alloc::string::String> =
            FORMS.iter().map(|f| format!("{f}")).collect();
        assert_eq!(
            names,
            [
                "ldrb", "ldrh", "ldr w", "ldr x", "ldrsb", "ldrsh", "ldrsw", "strb", "strh",
                "str w", "str x", "ldp", "stp"
            ]
        );
        assert_eq!(format!("{}", Form::PairAcross), "ldp across granules");
        assert!(Form::StorePair.is_store() && !Form::LoadPair.is_store());
        assert_eq!(
            format!("{}", State::Neighbour),
            "the granule after a registered one"
        );
    }
}
