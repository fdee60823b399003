//! Every check gives the same verdict alone (`only=`) as in the full run, under every
//! hypmodel profile and every public mutant: a check must not pass or fail because of
//! what ran before it (a page an earlier check left registered, say).

mod common;
use common::*;
use ioguard_runner::hyp::{MODEL_MUTANTS, MODEL_PROFILES};
use ioguard_runner::Kind;
use std::sync::Mutex;

/// Checks that judge the whole run by their definition (docs/CHECKS.md): every guard and
/// memshare answer so far, the console through every check so far, and the virtio devices,
/// which are set up at boot (one of them carries the suite's lines) and live through the
/// run like the console. Alone, the run is the boot and the check's own exercise, so an
/// earlier check's trouble (a second ENROLL that drops every registration, say) can make
/// them FAIL in the full run only: that direction is allowed, the other is not.
fn run_wide(name: &str) -> bool {
    ["guard: returns", "guard: console"].contains(&name) || virtio_checks().any(|v| v == name)
}

/// The hypmodel configurations: every profile at 4 KiB (and android14 at 64 KiB, where
/// probe targets are scarce), every mutant. `IOGUARD_ISOLATION_ONLY=A,B` keeps the
/// configurations that contain A or B (`mutant=unmap-noop`, say): for judging one change
/// quickly (cargo mutants), never in CI.
fn configs() -> Vec<String> {
    let all = all_configs();
    match std::env::var("IOGUARD_ISOLATION_ONLY") {
        Ok(only) if !only.is_empty() => {
            let picked: Vec<String> = all
                .into_iter()
                .filter(|c| only.split(',').any(|o| c.contains(o)))
                .collect();
            assert!(
                !picked.is_empty(),
                "IOGUARD_ISOLATION_ONLY={only} matches no configuration"
            );
            picked
        }
        _ => all,
    }
}

fn all_configs() -> Vec<String> {
    let mut c: Vec<String> = MODEL_PROFILES
        .iter()
        .map(|p| format!("model:{p},granule=4k"))
        .collect();
    c.push("model:android14,granule=64k".into());
    for m in MODEL_MUTANTS {
        let granule = if *m == "granule-mismatch" {
            "16k"
        } else {
            "4k"
        };
        c.push(format!("model:android14,granule={granule},mutant={m}"));
    }
    c
}

fn verdicts(hyp: &str, only: Option<&str>) -> Vec<(String, Kind)> {
    let mut args = vec!["--smp", "2", "--hyp", hyp];
    let sel = only.map(|n| format!("only={}", n.replace(": ", ":")));
    if let Some(s) = &sel {
        args.extend(["--append", s.as_str()]);
    }
    run(&args)
        .report
        .results
        .iter()
        .map(|r| (r.name(), r.kind))
        .collect()
}

#[test]
fn every_check_gives_the_same_verdict_alone() {
    let jobs: Vec<(String, String, Kind)> = configs()
        .into_iter()
        .flat_map(|hyp| {
            let full = verdicts(&hyp, None);
            assert!(full.len() >= DEFAULT_CHECKS.len(), "{hyp}: {full:?}");
            full.into_iter().map(move |(n, k)| (hyp.clone(), n, k))
        })
        .collect();
    let queue = Mutex::new(jobs.into_iter());
    let wrong = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some((hyp, name, full)) = queue.lock().unwrap().next() else {
                    break;
                };
                let alone = verdicts(&hyp, Some(&name));
                let got = alone.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
                let run_wide = run_wide(&name) && full == Kind::Fail && got == Some(Kind::Pass);
                if got != Some(full) && !run_wide {
                    wrong
                        .lock()
                        .unwrap()
                        .push(format!("{hyp}: {name}: full run {full:?}, alone {got:?}"));
                }
            });
        }
    });
    let wrong = wrong.into_inner().unwrap();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
