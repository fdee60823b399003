//! Performing the access matrix of `guard: access-forms` (the expectations are the pure
//! `crate::access`): one probe per form at a device register, and the judgement of what
//! came back. Runs on either CPU; results come back as data.

use crate::access::{expect, Expect, Form, State, FORMS};
use crate::fault::Fault;
use crate::hyp::profile::Profile;
use crate::kernel::probe::{self, Width};
use crate::refusal::{judge_stray, Deviation, Observed, StrayAccess};
use crate::targets::{Target, TargetKind};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::pages::{observed_load, unregistered_window};
use crate::kernel::mm::mmu::MmuError;

fn width(bytes: u8) -> Width {
    match bytes {
        1 => Width::W8,
        2 => Width::W16,
        4 => Width::W32,
        _ => Width::W64,
    }
}

/// One access tried: where, and what came back.
#[derive(Clone, Copy, Debug)]
pub struct Tried {
    pub form: Form,
    pub addr: u64,
    pub site: u64,
    pub observed: Observed,
}

/// Performs `form` at `addr` (aligned for it). Stores write 0 to an identification
/// register, which the devices probed here ignore.
fn perform(form: Form, addr: u64) -> Tried {
    // SAFETY: every access is to a device register of a probe target mapped as device
    // memory by the caller: identification registers (read-only, no read side effects;
    // writes ignored), and a fault is caught by the armed probe.
    let (observed, site) = unsafe {
        match form {
            Form::Load(n) => (
                observed_load(probe::read(addr, width(n))),
                probe::load_site(width(n)),
            ),
            Form::LoadSigned(n) => (
                observed_load(probe::read_signed(addr, width(n))),
                probe::signed_load_site(width(n)),
            ),
            Form::Store(n) => (
                probe::write(addr, width(n), 0)
                    .map_or_else(Observed::StoreFaulted, |()| Observed::Stored),
                probe::store_site(width(n)),
            ),
            Form::LoadPair | Form::PairAcross => (
                observed_load(probe::read_pair(addr).map(|(a, _)| a).map_err(|(l, _)| l)),
                probe::ldp_site(),
            ),
            Form::StorePair => (
                probe::write_pair(addr, 0, 0)
                    .map_or_else(Observed::StoreFaulted, |()| Observed::Stored),
                probe::stp_site(),
            ),
        }
    };
    Tried {
        form,
        addr,
        site,
        observed,
    }
}

/// The forms `profile` lets ioguard try on `t` in `state`: not those whose outcome is
/// the VMM's to choose, and on PCI configuration space no store that reaches past the
/// read-only IDs at offset 0 (a 64-bit `str` or an `stp` would write the command register
/// of whatever function answers there, and a live device's memory decoding with it).
pub fn forms_for(t: &Target, state: State, profile: Profile) -> Vec<Form> {
    FORMS
        .iter()
        .copied()
        .filter(|f| expect(*f, state, profile) != Expect::NotTried)
        .filter(|f| {
            t.device != TargetKind::PciConfig || !matches!(f, Form::StorePair | Form::Store(8))
        })
        .collect()
}

/// Tries `forms` on `t`'s identification register (pairs on its 16-byte block), and an
/// `ldp` across `across` (the start of `t`'s granule, whose previous granule the caller
/// mapped), through a stage-1 mapping of `t`'s page of its own: what the hypervisor does
/// with the page is the point, not whether ioguard registered it.
pub fn try_forms(t: &Target, forms: &[Form], across: Option<u64>) -> Result<Vec<Tried>, MmuError> {
    let _window = unregistered_window(t.page())?;
    let mut tried: Vec<Tried> = forms
        .iter()
        .map(|f| {
            let addr = if f.is_pair() {
                t.id_addr() & !0xf
            } else {
                t.id_addr()
            };
            perform(*f, addr)
        })
        .collect();
    tried.extend(across.map(|boundary| perform(Form::PairAcross, boundary - 8)));
    Ok(tried)
}

/// What was wrong with one access, for the FAIL line.
fn wrong(t: &Tried, want: Expect) -> Option<String> {
    let fault = |o: &Observed| match o {
        Observed::LoadFaulted { fault, .. } | Observed::StoreFaulted(fault) => Some(*fault),
        _ => None,
    };
    match want {
        Expect::NotTried => None,
        Expect::Forwarded => fault(&t.observed).map(|f: Fault| {
            format!(
                "{} at {:#x} aborted ({f}), expected it forwarded",
                t.form, t.addr
            )
        }),
        Expect::Refused => {
            let access = StrayAccess {
                addr: t.addr,
                site: t.site,
                device_answer: None,
            };
            match judge_stray(&access, t.observed) {
                Ok(_) => None,
                Err(Deviation::Dropped { .. } | Deviation::StoreCompleted) => Some(format!(
                    "{} at {:#x} was forwarded, expected pKVM's abort",
                    t.form, t.addr
                )),
                Err(d) => Some(format!("{} at {:#x}: {d}", t.form, t.addr)),
            }
        }
    }
}

/// Judges every access tried on a page in `state`: (how many were as expected, what was
/// wrong).
pub fn judge(tried: &[Tried], state: State, profile: Profile) -> (usize, Vec<String>) {
    let bad: Vec<String> = tried
        .iter()
        .filter_map(|t| wrong(t, expect(t.form, state, profile)))
        .collect();
    (tried.len() - bad.len(), bad)
}
