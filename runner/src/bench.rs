//! `--bench [N]`: image size and boot time against QEMU's floor. A benchmark that prints a
//! table, not a test: it never asserts on the times.

use crate::build::runner_dir;
use crate::exec::{boot_image, resolve_image, Outcome, RunError};
use crate::floor::write_floor_image;
use crate::launch::launcher_for;
use crate::options::Options;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Image size goal.
pub const IMAGE_GOAL_BYTES: u64 = 128 * 1024;
/// Boot time goal: median ioguard boot <= this many times the floor's median.
pub const RATIO_GOAL: f64 = 1.5;

/// Median, minimum and maximum of some durations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The median (mean of the middle two for an even count).
    pub median: Duration,
    /// The minimum.
    pub min: Duration,
    /// The maximum.
    pub max: Duration,
}

impl Stats {
    /// `None` for an empty slice.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        let mut v = samples.to_vec();
        v.sort();
        let n = v.len();
        if n == 0 {
            return None;
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// What `--bench` measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The booted Image.
    pub image: PathBuf,
    /// Its size in bytes.
    pub image_bytes: u64,
    /// Boots per program.
    pub boots: u32,
    /// ioguard: start of QEMU to QEMU's exit.
    pub ioguard: Stats,
    /// ioguard: start of QEMU to the `SUMMARY:` line (if every boot printed one).
    pub to_summary: Option<Stats>,
    /// The floor program: start of QEMU to QEMU's exit.
    pub floor: Stats,
    /// The QEMU command line of an ioguard boot.
    pub command_line: String,
    /// ioguard boots that did not end with a valid EXIT line, or timed out (status, problem).
    pub broken: Vec<(i32, String)>,
}

impl BenchReport {
    /// Median ioguard boot to power-off / median floor.
    pub fn ratio(&self) -> f64 {
        self.ioguard.median.as_secs_f64() / self.floor.median.as_secs_f64().max(1e-9)
    }

    /// Median ioguard boot to SUMMARY / median floor.
    pub fn summary_ratio(&self) -> Option<f64> {
        self.to_summary
            .map(|s| s.median.as_secs_f64() / self.floor.median.as_secs_f64().max(1e-9))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "qemu: {}", self.command_line)?;
        writeln!(
            f,
            "image   {}: {} bytes = {:.1} KiB (goal <= {} KiB: {})",
            self.image.display(),
            self.image_bytes,
            self.image_bytes as f64 / 1024.0,
            IMAGE_GOAL_BYTES / 1024,
            verdict(self.image_bytes <= IMAGE_GOAL_BYTES)
        )?;
        writeln!(
            f,
            "boots   {} of each, alternating; wall time from QEMU start",
            self.boots
        )?;
        writeln!(
            f,
            "{:<28}{:>10}{:>10}{:>10}{:>8}",
            "", "median", "min", "max", "ratio"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &Stats, ratio: Option<f64>| {
            writeln!(
                f,
                "{:<28}{:>10}{:>10}{:>10}{:>8}",
                name,
                secs(s.median),
                secs(s.min),
                secs(s.max),
                ratio.map(|r| format!("{r:.2}")).unwrap_or_default()
            )
        };
        row(
            f,
            "ioguard, to power-off",
            &self.ioguard,
            Some(self.ratio()),
        )?;
        if let Some(s) = &self.to_summary {
            row(f, "ioguard, to SUMMARY line", s, self.summary_ratio())?;
        }
        row(f, "QEMU floor (one line, off)", &self.floor, Some(1.0))?;
        let r = self.summary_ratio().unwrap_or(self.ratio());
        writeln!(
            f,
            "ratio   {r:.2} x floor to {} (goal <= {RATIO_GOAL}: {})",
            if self.to_summary.is_some() {
                "SUMMARY"
            } else {
                "power-off"
            },
            verdict(r <= RATIO_GOAL)
        )?;
        // Identical problems are reported once, with a count.
        let mut seen: Vec<(&(i32, String), usize)> = Vec::new();
        for b in &self.broken {
            match seen.iter_mut().find(|(x, _)| *x == b) {
                Some((_, n)) => *n += 1,
                None => seen.push((b, 1)),
            }
        }
        for ((status, problem), count) in seen {
            writeln!(
                f,
                "warning: {count} of {} ioguard boots ended with status {status}: {problem}",
                self.boots
            )?;
        }
        Ok(())
    }
}

fn quiet_boot(opts: &Options, image: &std::path::Path) -> Result<Outcome, RunError> {
    boot_image(opts, image, &mut |_, _| {})
}

/// Boot the guest (built unless `--image`) and the floor `opts.bench` times each (default
/// 10), alternating, after one untimed warm-up boot of each, with the same QEMU options.
pub fn bench(opts: &Options) -> Result<BenchReport, RunError> {
    let n = opts
        .bench
        .unwrap_or(crate::options::DEFAULT_BENCH_BOOTS)
        .max(1);
    let mut o = opts.clone();
    o.echo = false;
    o.gdb = false;
    launcher_for(&opts.hyp).ready(opts)?;
    let image = resolve_image(opts)?;
    let image_bytes = std::fs::metadata(&image)
        .map_err(|e| RunError::Io(format!("{}: {e}", image.display())))?
        .len();
    let floor =
        write_floor_image(&runner_dir()).map_err(|e| RunError::Io(format!("floor image: {e}")))?;
    quiet_boot(&o, &floor)?;
    let first = quiet_boot(&o, &image)?;
    let (mut g, mut s, mut fl, mut broken) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let out = quiet_boot(&o, &image)?;
        g.push(out.elapsed);
        if let Some(t) = out.time_of("SUMMARY:") {
            s.push(t);
        }
        if let Some(p) = out.problem {
            broken.push((out.status, p));
        }
        fl.push(quiet_boot(&o, &floor)?.elapsed);
    }
    let stats = |v: &[Duration]| Stats::of(v).expect("n >= 1 samples");
    Ok(BenchReport {
        image,
        image_bytes,
        boots: n,
        ioguard: stats(&g),
        to_summary: if s.len() == g.len() {
            Stats::of(&s)
        } else {
            None
        },
        floor: stats(&fl),
        command_line: first.command_line,
        broken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn stats() {
        assert_eq!(Stats::of(&[]), None);
        let s = Stats::of(&ms(&[50, 10, 40])).unwrap();
        assert_eq!(
            (s.median, s.min, s.max),
            (
                Duration::from_millis(40),
                Duration::from_millis(10),
                Duration::from_millis(50)
            )
        );
        assert_eq!(
            Stats::of(&ms(&[40, 10, 20, 30])).unwrap().median,
            Duration::from_millis(25)
        );
    }

    #[test]
    fn table() {
        let st = |m| Stats::of(&ms(&[m])).unwrap();
        let r = BenchReport {
            image: PathBuf::from("i.bin"),
            image_bytes: 140 * 1024,
            boots: 1,
            ioguard: st(90),
            to_summary: Some(st(60)),
            floor: st(45),
            command_line: "q".into(),
            broken: vec![(
                3,
                "guest ended without an EXIT line; QEMU exit status 0".into(),
            )],
        };
        assert_eq!(r.ratio(), 2.0);
        let t = r.to_string();
        assert!(
            t.contains("143360 bytes = 140.0 KiB (goal <= 128 KiB: NOT met)"),
            "{t}"
        );
        assert!(
            t.contains("ratio   1.33 x floor to SUMMARY (goal <= 1.5: met)"),
            "{t}"
        );
        assert!(t.contains("0.090 s"));
        assert!(
            t.contains("warning: 1 of 1 ioguard boots ended with status 3: guest ended"),
            "{t}"
        );
    }
}
