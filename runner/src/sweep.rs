//! `--matrix`: run the suite on every column of [`crate::matrix::columns`], two at a time,
//! and write the table ([`crate::matrix`], [`crate::html`]) and each column's TAP13 and
//! KTAP. The guest is built once and every column boots that Image.
//!
//! The pKVM host's columns each boot a whole Linux under TCG with two vCPUs, so only one
//! of them runs at a time; the other worker meanwhile runs the light columns (plain QEMU,
//! hypmodel), each a second or two. On 2 cores the sweep takes about as long as the pKVM
//! columns one after the other.

use crate::exec::{resolve_image, run, RunError};
use crate::html::render_html;
use crate::matrix::{columns, render_markdown, select, Column, ColumnRun, Matrix};
use crate::options::Options;
use crate::output::{Report, STATUS_LAUNCH};
use crate::render::render_tap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Columns run at once.
pub const WORKERS: usize = 2;
/// The timeout of a pKVM host column unless `--timeout` says otherwise: it boots Linux
/// under TCG before the guest starts.
pub const PKVM_TIMEOUT: Duration = Duration::from_secs(300);

/// What the workers share: the columns not started yet, and whether a pKVM host column is
/// running.
struct Queue {
    todo: VecDeque<(usize, Column)>,
    pkvm_busy: bool,
}

/// The next column a worker may start: the first one left that is not a pKVM host column
/// while another one runs. `None` when nothing is left; `Some(None)` when it must wait.
fn next(q: &mut Queue) -> Option<Option<(usize, Column)>> {
    if q.todo.is_empty() {
        return None;
    }
    let at = q
        .todo
        .iter()
        .position(|(_, c)| !(c.is_pkvm_host() && q.pkvm_busy));
    Some(at.and_then(|i| {
        let item = q.todo.remove(i)?;
        if item.1.is_pkvm_host() {
            q.pkvm_busy = true;
        }
        Some(item)
    }))
}

/// The order columns start in, each with its place in the table: the pKVM host's first,
/// since they run one after the other and make the sweep's critical path; the light
/// columns fill the other worker meanwhile.
fn start_order(cols: Vec<Column>) -> VecDeque<(usize, Column)> {
    let (mut heavy, light): (VecDeque<_>, VecDeque<_>) = cols
        .into_iter()
        .enumerate()
        .partition(|(_, c)| c.is_pkvm_host());
    heavy.extend(light);
    heavy
}

/// The options of one column's run: its hypervisor, the shared Image, its report files.
fn column_options(opts: &Options, col: &Column, image: &Path, dir: &Path) -> Options {
    let mut o = opts.clone();
    o.hyp = col.hyp.clone();
    o.image = Some(image.to_path_buf());
    o.tap = Some(dir.join(format!("{}.tap", col.name)));
    o.ktap = Some(dir.join(format!("{}.ktap", col.name)));
    o.junit = None;
    o.matrix = None;
    o.matrix_columns = Vec::new();
    o.echo = false;
    if col.is_pkvm_host() && o.timeout.is_none() {
        o.timeout = Some(PKVM_TIMEOUT);
    }
    o
}

/// Run one column; an error is the column's [`ColumnRun::Unreachable`], and its report
/// files then say why.
fn run_column(opts: &Options, col: &Column, image: &Path, dir: &Path) -> ColumnRun {
    let o = column_options(opts, col, image, dir);
    let started = Instant::now();
    match run(&o) {
        Ok(out) => ColumnRun::Ran {
            secs: started.elapsed().as_secs_f64(),
            report: out.report,
            status: out.status,
            problem: out.problem,
            stall: out.stall,
        },
        Err(e) => {
            let why = e.to_string();
            let empty = Report::parse::<&str>(&[]);
            let tap = render_tap(&empty, STATUS_LAUNCH, Some(&why), None);
            let ktap = crate::ktap::render_ktap(&empty, STATUS_LAUNCH, Some(&why), None);
            for (path, text) in [(&o.tap, tap), (&o.ktap, ktap)] {
                if let Some(p) = path {
                    let _ = std::fs::write(p, text);
                }
            }
            ColumnRun::Unreachable(why)
        }
    }
}

/// One worker: take columns until none is left (or a signal stops the runner).
fn worker(
    opts: &Options,
    image: &Path,
    dir: &Path,
    shared: &(Mutex<Queue>, Condvar),
    done: &Mutex<Vec<Option<(Column, ColumnRun)>>>,
    total: usize,
) {
    let (lock, cv) = shared;
    loop {
        let item = {
            let mut q = lock.lock().expect("queue lock");
            loop {
                if crate::stream::stopping() {
                    return;
                }
                match next(&mut q) {
                    None => return,
                    Some(Some(item)) => break item,
                    Some(None) => q = cv.wait(q).expect("queue lock"),
                }
            }
        };
        let (i, col) = item;
        let result = run_column(opts, &col, image, dir);
        if col.is_pkvm_host() {
            lock.lock().expect("queue lock").pkvm_busy = false;
            cv.notify_all();
        }
        let mut d = done.lock().expect("results lock");
        if opts.echo {
            let finished = d.iter().filter(|x| x.is_some()).count();
            println!("{}", progress(finished, total, &col, &result));
        }
        d[i] = Some((col, result));
    }
}

/// `matrix: [3/20] ...`: the line printed when a column ends, `finished` columns before.
fn progress(finished: usize, total: usize, col: &Column, r: &ColumnRun) -> String {
    format!("matrix: [{}/{total}] {}", finished + 1, describe(col, r))
}

/// `model-android14-4k (--hyp model:android14,granule=4k): status 0 in 1.2 s`.
fn describe(col: &Column, r: &ColumnRun) -> String {
    match r {
        ColumnRun::Unreachable(why) => {
            format!("{} (--hyp {}): unreachable: {why}", col.name, col.spec)
        }
        ColumnRun::Ran {
            status,
            secs,
            problem,
            ..
        } => format!(
            "{} (--hyp {}): status {status} in {secs:.1} s{}",
            col.name,
            col.spec,
            problem
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ),
    }
}

/// The command line that made a matrix, for its pages: `./qemu-run.sh --matrix DIR` with
/// the options that change what the guest does.
pub fn how(opts: &Options, dir: &Path) -> String {
    let mut s = format!("./qemu-run.sh --matrix {}", dir.display());
    if !opts.matrix_columns.is_empty() {
        s.push_str(&format!(
            " --matrix-columns {}",
            opts.matrix_columns.join(",")
        ));
    }
    if opts.smp != 1 {
        s.push_str(&format!(" --smp {}", opts.smp));
    }
    if !opts.append.is_empty() {
        s.push_str(&format!(" --append '{}'", opts.append));
    }
    s
}

/// Run the matrix `opts.matrix` asks for and write its files; the table is returned (its
/// [`Matrix::exit_status`] is the command's status).
pub fn sweep(opts: &Options) -> Result<Matrix, RunError> {
    let dir: PathBuf = opts
        .matrix
        .clone()
        .unwrap_or_else(|| PathBuf::from("matrix"));
    let cols =
        select(columns(), &opts.matrix_columns).map_err(|e| RunError::Usage(e.to_string()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| RunError::Usage(format!("--matrix {}: {e}", dir.display())))?;
    let image = resolve_image(opts)?;
    let total = cols.len();
    let shared = (
        Mutex::new(Queue {
            todo: start_order(cols),
            pkvm_busy: false,
        }),
        Condvar::new(),
    );
    let done = Mutex::new(vec![None; total]);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| worker(opts, &image, &dir, &shared, &done, total));
        }
    });
    let runs: Vec<(Column, ColumnRun)> = done
        .into_inner()
        .expect("results lock")
        .into_iter()
        .flatten()
        .collect();
    let m = Matrix::collect(&runs);
    let how = how(opts, &dir);
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .map_err(|e| RunError::Io(format!("cannot write {}: {e}", p.display())))
    };
    write("matrix.md", render_markdown(&m, &how))?;
    write("matrix.html", render_html(&m, &how))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(names: &[&str]) -> Queue {
        let all = columns();
        Queue {
            todo: names
                .iter()
                .map(|n| all.iter().find(|c| c.name == *n).unwrap().clone())
                .enumerate()
                .collect(),
            pkvm_busy: false,
        }
    }

    fn take(q: &mut Queue) -> Option<Option<String>> {
        next(q).map(|o| o.map(|(_, c)| c.name))
    }

    #[test]
    fn one_pkvm_host_at_a_time_and_the_light_columns_meanwhile() {
        let mut q = queue(&["pkvm-protected", "pkvm-qemu", "plain", "model-kvm"]);
        assert_eq!(take(&mut q), Some(Some("pkvm-protected".into())));
        assert!(q.pkvm_busy);
        // The second worker skips the next pKVM column while one runs.
        assert_eq!(take(&mut q), Some(Some("plain".into())));
        assert_eq!(take(&mut q), Some(Some("model-kvm".into())));
        assert_eq!(take(&mut q), Some(None), "must wait for the pKVM host");
        q.pkvm_busy = false;
        assert_eq!(take(&mut q), Some(Some("pkvm-qemu".into())));
        assert_eq!(take(&mut q), None);
    }

    #[test]
    fn the_pkvm_host_columns_start_first_and_keep_their_place_in_the_table() {
        let order: Vec<(usize, String)> = start_order(columns())
            .into_iter()
            .map(|(i, c)| (i, c.name))
            .collect();
        assert_eq!(order.len(), 20);
        assert_eq!(order[0], (15, "pkvm-protected".to_string()));
        assert_eq!(order[4], (19, "pkvm-qemu".to_string()));
        assert_eq!(order[5], (0, "plain".to_string()));
        assert_eq!(order[19], (14, "model-pkvm".to_string()));
    }

    #[test]
    fn a_column_gets_its_hypervisor_the_shared_image_and_its_files() {
        let all = columns();
        let opts = Options {
            tap: Some("x.tap".into()),
            junit: Some("x.xml".into()),
            matrix: Some("m".into()),
            ..Options::default()
        };
        let col = all
            .iter()
            .find(|c| c.name == "model-android16-16k")
            .unwrap();
        let o = column_options(&opts, col, Path::new("/i.bin"), Path::new("m"));
        assert_eq!(
            o.hyp,
            crate::Hyp::parse("model:android16,granule=16k").unwrap()
        );
        assert_eq!(o.image.as_deref(), Some(Path::new("/i.bin")));
        assert_eq!(
            o.tap.as_deref(),
            Some(Path::new("m/model-android16-16k.tap"))
        );
        assert_eq!(
            o.ktap.as_deref(),
            Some(Path::new("m/model-android16-16k.ktap"))
        );
        assert_eq!((o.junit, o.matrix, o.echo), (None, None, false));
        assert_eq!(o.timeout, None);
        let pk = all.iter().find(|c| c.name == "pkvm-qemu").unwrap();
        let o = column_options(&opts, pk, Path::new("/i.bin"), Path::new("m"));
        assert_eq!(o.timeout, Some(PKVM_TIMEOUT));
        let given = Options {
            timeout: Some(Duration::from_secs(9)),
            ..opts
        };
        let o = column_options(&given, pk, Path::new("/i.bin"), Path::new("m"));
        assert_eq!(o.timeout, Some(Duration::from_secs(9)));
    }

    #[test]
    fn each_column_says_how_it_ended() {
        let all = columns();
        let ran = ColumnRun::Ran {
            report: Report::parse(&["PASS: a: b"]),
            status: 124,
            problem: Some("TIMEOUT: guest did not finish within 60 s".into()),
            stall: None,
            secs: 61.04,
        };
        assert_eq!(
            progress(2, 20, &all[4], &ran),
            "matrix: [3/20] model-android14-4k (--hyp model:android14,granule=4k): status 124 \
             in 61.0 s: TIMEOUT: guest did not finish within 60 s"
        );
        let ok = ColumnRun::Ran {
            report: Report::parse(&["PASS: a: b"]),
            status: 0,
            problem: None,
            stall: None,
            secs: 0.25,
        };
        assert_eq!(
            describe(&all[0], &ok),
            "plain (--hyp plain): status 0 in 0.2 s"
        );
        let gone = ColumnRun::Unreachable("no kit".into());
        assert_eq!(
            progress(0, 1, &all[19], &gone),
            "matrix: [1/1] pkvm-qemu (--hyp pkvm:qemu): unreachable: no kit"
        );
    }

    #[test]
    fn how_names_what_changes_the_run() {
        let o = Options {
            matrix_columns: vec!["plain".into(), "model-*".into()],
            smp: 2,
            append: "log=debug".into(),
            ..Options::default()
        };
        assert_eq!(
            how(&o, Path::new("docs")),
            "./qemu-run.sh --matrix docs --matrix-columns plain,model-* --smp 2 --append 'log=debug'"
        );
        assert_eq!(
            how(&Options::default(), Path::new("m")),
            "./qemu-run.sh --matrix m"
        );
    }
}
