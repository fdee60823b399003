//! The conformance matrix (`--matrix`): which hypervisors a run can reach here (the
//! columns), and the table of each check's verdict on each of them, as Markdown. Pure:
//! [`crate::sweep`] runs the columns and hands their outcomes here; [`crate::html`] renders
//! the same table as a page.
//!
//! Every column is a *correct* hypervisor (no mutant): any FAIL or XPASS in the table is a
//! finding, and the matrix's exit status says so ([`Matrix::exit_status`]).

use crate::hyp::Hyp;
use crate::output::{Kind, Report, Stall, STATUS_FAIL, STATUS_LAUNCH, STATUS_PASS};
use std::fmt;
use std::fmt::Write as _;

/// hypmodel profiles whose guard and memory sharing have a granule (hypmodel answers
/// granule 0 for `kvm` and `pkvm`, so a granule would be the same column three times).
const GRANULE_PROFILES: &[&str] = &["android13", "android14", "android16", "upstream"];
/// hypmodel profiles without a granule of their own.
const FLAT_PROFILES: &[&str] = &["kvm", "pkvm"];

/// The pKVM host's columns: (name, `--hyp` value).
const PKVM_COLUMNS: &[(&str, &str)] = &[
    ("pkvm-protected", "pkvm"),
    ("pkvm-ordinary", "pkvm:ordinary"),
    ("pkvm-protected-crosvm", "pkvm,layout=crosvm"),
    ("pkvm-ordinary-crosvm", "pkvm:ordinary,layout=crosvm"),
    ("pkvm-qemu", "pkvm:qemu"),
];

/// One hypervisor of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name: its files are `DIR/<name>.tap` and `.ktap`.
    pub name: String,
    /// The `--hyp` value that runs it.
    pub spec: String,
    /// What `spec` parses to.
    pub hyp: Hyp,
}

impl Column {
    fn new(name: impl Into<String>, spec: impl Into<String>) -> Column {
        let spec = spec.into();
        let hyp = Hyp::parse(&spec).expect("the matrix's own --hyp values parse");
        Column {
            name: name.into(),
            spec,
            hyp,
        }
    }

    /// A column on the emulated pKVM host: a whole Linux under TCG with two vCPUs, so the
    /// sweep runs these one at a time.
    pub fn is_pkvm_host(&self) -> bool {
        matches!(self.hyp, Hyp::Pkvm(_))
    }
}

/// Every column `--matrix` runs, in the table's order: plain QEMU, hypmodel in each
/// profile (each granule where the profile has one), the pKVM host's VMs.
pub fn columns() -> Vec<Column> {
    let mut v = vec![Column::new("plain", "plain")];
    for p in GRANULE_PROFILES {
        for g in crate::hyp::MODEL_GRANULES {
            v.push(Column::new(
                format!("model-{p}-{g}"),
                format!("model:{p},granule={g}"),
            ));
        }
    }
    for p in FLAT_PROFILES {
        v.push(Column::new(format!("model-{p}"), format!("model:{p}")));
    }
    for (name, spec) in PKVM_COLUMNS {
        v.push(Column::new(*name, *spec));
    }
    v
}

/// Why a column filter cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatrixError {
    /// A name of `--matrix-columns` that matches no column.
    UnknownColumn {
        /// The name given.
        given: String,
        /// Every column's name.
        known: Vec<String>,
    },
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatrixError::UnknownColumn { given, known } => write!(
                f,
                "--matrix-columns: '{given}' matches no column (columns: {})",
                known.join(", ")
            ),
        }
    }
}

impl std::error::Error for MatrixError {}

/// Whether column `name` matches `pattern` (a name, or a prefix followed by `*`).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The columns `filter` selects, in the table's order (all when it is empty). A name that
/// matches nothing is an error, so a typo cannot shrink the matrix without a word.
pub fn select(all: Vec<Column>, filter: &[String]) -> Result<Vec<Column>, MatrixError> {
    if filter.is_empty() {
        return Ok(all);
    }
    if let Some(bad) = filter
        .iter()
        .find(|p| !all.iter().any(|c| matches(p, &c.name)))
    {
        return Err(MatrixError::UnknownColumn {
            given: bad.clone(),
            known: all.iter().map(|c| c.name.clone()).collect(),
        });
    }
    Ok(all
        .into_iter()
        .filter(|c| filter.iter().any(|p| matches(p, &c.name)))
        .collect())
}

/// What running one column gave.
// One per column, moved once into the table: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ColumnRun {
    /// The run could not happen (the pKVM host kit could not be fetched, QEMU is
    /// missing, ...): why.
    Unreachable(String),
    /// The run happened.
    Ran {
        /// The guest's lines, parsed.
        report: Report,
        /// The runner's status for it.
        status: i32,
        /// Why it did not end normally, if it did not.
        problem: Option<String>,
        /// Where it stopped, when it ended without a verdict.
        stall: Option<Stall>,
        /// Its wall time in seconds.
        secs: f64,
    },
}

/// How a column ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnState {
    /// Status 0: every check passed (KFAIL allowed).
    Passed,
    /// Status 1: a check FAILed or XPASSed.
    Failed,
    /// No verdict: a timeout, silence, no EXIT line, or the guest's fatal error.
    NoVerdict,
    /// The hypervisor could not be reached or its launcher died (status 3).
    Unreachable,
}

impl ColumnState {
    /// The word the tables show.
    pub fn label(self) -> &'static str {
        match self {
            ColumnState::Passed => "passed",
            ColumnState::Failed => "failed",
            ColumnState::NoVerdict => "no verdict",
            ColumnState::Unreachable => "unreachable",
        }
    }
}

/// One column of the table: which hypervisor, how it ended, why.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSummary {
    /// [`Column::name`].
    pub name: String,
    /// [`Column::spec`].
    pub spec: String,
    /// How it ended.
    pub state: ColumnState,
    /// The runner's status (`None` when the run could not happen).
    pub status: Option<i32>,
    /// Why it did not end normally, or why it could not run.
    pub reason: Option<String>,
    /// The profile and granule the guest detected (`profile=... granule=...`).
    pub detected: Option<String>,
    /// Wall time in seconds (`None` when it could not run).
    pub secs: Option<f64>,
}

/// What a cell says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellState {
    /// The check's result line.
    Result(Kind),
    /// The check was running when the column stopped without a verdict.
    NoVerdict,
    /// The check printed nothing: it never ran, or the column could not run at all.
    NotRun,
}

impl CellState {
    /// The cell's text.
    pub fn label(self) -> &'static str {
        match self {
            CellState::Result(k) => k.tag(),
            CellState::NoVerdict => "no verdict",
            CellState::NotRun => "not run",
        }
    }

    /// A CSS class name for it.
    pub fn class(self) -> &'static str {
        match self {
            CellState::Result(Kind::Pass) => "pass",
            CellState::Result(Kind::Fail) => "fail",
            CellState::Result(Kind::Skip) => "skip",
            CellState::Result(Kind::KFail) => "kfail",
            CellState::Result(Kind::XPass) => "xpass",
            CellState::NoVerdict => "noverdict",
            CellState::NotRun => "notrun",
        }
    }

    /// Every state, in the legend's order, with what it means.
    pub const LEGEND: [(CellState, &'static str); 7] = [
        (CellState::Result(Kind::Pass), "the check passed"),
        (CellState::Result(Kind::Fail), "the check failed: a finding"),
        (
            CellState::Result(Kind::Skip),
            "the hypervisor lacks what the check needs (reason given)",
        ),
        (
            CellState::Result(Kind::KFail),
            "a deviation this profile is known to have: not a failure",
        ),
        (
            CellState::Result(Kind::XPass),
            "passed where this profile's known failure was expected: a finding",
        ),
        (
            CellState::NoVerdict,
            "the check was running when the run stopped without a verdict",
        ),
        (
            CellState::NotRun,
            "no result: the run stopped before it, or the hypervisor was unreachable",
        ),
    ];
}

/// One cell: its state and its reason (the result line's detail, or why there is none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// What it says.
    pub state: CellState,
    /// Why (empty when the result line had no detail).
    pub reason: String,
}

/// One check's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `group: case`.
    pub name: String,
    /// One cell per column, in the columns' order.
    pub cells: Vec<Cell>,
}

impl Row {
    /// The check's group (`guard` of `guard: stray-read`; empty without one).
    pub fn group(&self) -> &str {
        self.name.split_once(": ").map_or("", |(g, _)| g)
    }

    /// The check's case (`stray-read`).
    pub fn case(&self) -> &str {
        self.name.split_once(": ").map_or(&self.name, |(_, c)| c)
    }
}

/// The table: check x hypervisor.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// The columns, in order.
    pub columns: Vec<ColumnSummary>,
    /// A row per check, in the order the checks ran (first seen in any column).
    pub rows: Vec<Row>,
}

/// The check names a column knows of, in order: its results, then the check that was
/// running and those that never ran when it stopped.
fn names_of(run: &ColumnRun) -> Vec<String> {
    match run {
        ColumnRun::Unreachable(_) => Vec::new(),
        ColumnRun::Ran { report, stall, .. } => {
            let mut v: Vec<String> = report.results.iter().map(|r| r.name()).collect();
            if let Some(s) = stall {
                v.extend(s.running.iter().cloned());
                v.extend(s.not_run.iter().cloned());
            }
            v
        }
    }
}

/// How a run ended, from its status.
fn state_of(run: &ColumnRun) -> ColumnState {
    match run {
        ColumnRun::Unreachable(_) => ColumnState::Unreachable,
        ColumnRun::Ran { status, .. } => match *status {
            STATUS_PASS => ColumnState::Passed,
            STATUS_FAIL => ColumnState::Failed,
            STATUS_LAUNCH => ColumnState::Unreachable,
            _ => ColumnState::NoVerdict,
        },
    }
}

fn summary(column: &Column, run: &ColumnRun) -> ColumnSummary {
    let (status, reason, detected, secs) = match run {
        ColumnRun::Unreachable(why) => (None, Some(why.clone()), None, None),
        ColumnRun::Ran {
            report,
            status,
            problem,
            secs,
            ..
        } => {
            let detected = report.header.as_ref().map(|h| {
                let get = |k| h.get(k).unwrap_or("?");
                format!("profile={} granule={}", get("profile"), get("granule"))
            });
            (Some(*status), problem.clone(), detected, Some(*secs))
        }
    };
    ColumnSummary {
        name: column.name.clone(),
        spec: column.spec.clone(),
        state: state_of(run),
        status,
        reason,
        detected,
        secs,
    }
}

/// The cell of check `name` in a column that ended as `run`.
fn cell(name: &str, run: &ColumnRun) -> Cell {
    let (state, reason) = match run {
        ColumnRun::Unreachable(why) => (CellState::NotRun, format!("unreachable: {why}")),
        ColumnRun::Ran {
            report,
            problem,
            stall,
            ..
        } => {
            let why = problem.as_deref().unwrap_or("the run stopped");
            let stall = stall.as_ref();
            if let Some(r) = report.result(name) {
                (
                    CellState::Result(r.kind),
                    r.detail.clone().unwrap_or_default(),
                )
            } else if stall.is_some_and(|s| s.running.as_deref() == Some(name)) {
                let reason = format!("it was running when {why}");
                (CellState::NoVerdict, reason)
            } else if stall.is_some_and(|s| s.not_run.iter().any(|n| n == name)) {
                let reason = format!("never ran: the run stopped before it ({why})");
                (CellState::NotRun, reason)
            } else {
                let reason = "this run printed no result for it".to_string();
                (CellState::NotRun, reason)
            }
        }
    };
    Cell { state, reason }
}

impl Matrix {
    /// Collect the table from each column's run.
    pub fn collect(runs: &[(Column, ColumnRun)]) -> Matrix {
        let mut names: Vec<String> = Vec::new();
        for (_, run) in runs {
            for n in names_of(run) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let rows = names
            .into_iter()
            .map(|name| Row {
                cells: runs.iter().map(|(_, run)| cell(&name, run)).collect(),
                name,
            })
            .collect();
        Matrix {
            columns: runs.iter().map(|(c, r)| summary(c, r)).collect(),
            rows,
        }
    }

    /// The matrix's exit status: 1 when a check FAILed or XPASSed anywhere (every column
    /// is a correct hypervisor, so that is a finding), else 4 when a column ended without
    /// a verdict, else 3 when a column was unreachable, else 0.
    pub fn exit_status(&self) -> i32 {
        let any = |s: ColumnState| self.columns.iter().any(|c| c.state == s);
        let unexpected = self.rows.iter().any(|r| {
            r.cells
                .iter()
                .any(|c| matches!(c.state, CellState::Result(k) if k.is_unexpected()))
        });
        if unexpected || any(ColumnState::Failed) {
            STATUS_FAIL
        } else if any(ColumnState::NoVerdict) {
            crate::output::STATUS_NO_EXIT
        } else if any(ColumnState::Unreachable) {
            STATUS_LAUNCH
        } else {
            STATUS_PASS
        }
    }

    /// How many cells of each state, in [`CellState::LEGEND`]'s order.
    pub fn counts(&self) -> Vec<(CellState, usize)> {
        CellState::LEGEND
            .iter()
            .map(|(s, _)| {
                let n = self
                    .rows
                    .iter()
                    .flat_map(|r| &r.cells)
                    .filter(|c| c.state == *s)
                    .count();
                (*s, n)
            })
            .collect()
    }
}

/// Escape text for a Markdown table cell: every ASCII punctuation character Markdown or
/// its tables give a meaning to is backslash-escaped (CommonMark allows that for any ASCII
/// punctuation), and a line break becomes a space.
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `1.2 s`, or `-` when the column did not run.
pub fn fmt_wall(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".to_string(), |s| format!("{s:.1} s"))
}

/// The Markdown rendering: the columns (how each ended, and why), the table of verdicts,
/// then each check's reasons, each distinct (verdict, reason) once with its columns.
/// `how` says how it was made (the command line), shown under the title.
pub fn render_markdown(m: &Matrix, how: &str) -> String {
    let mut t = String::from("# ioguard conformance matrix\n\n");
    let _ = writeln!(
        t,
        "Generated by `{how}`: {} checks on {} hypervisors. A cell is the check's verdict \
         there; its reason is listed under [Reasons](#reasons).\n",
        m.rows.len(),
        m.columns.len()
    );
    t.push_str(
        "| column | `--hyp` | ended | detected | wall time | why |\n|---|---|---|---|---|---|\n",
    );
    for c in &m.columns {
        let status = c.status.map(|s| format!(" ({s})")).unwrap_or_default();
        let _ = writeln!(
            t,
            "| {} | `{}` | {}{status} | {} | {} | {} |",
            c.name,
            c.spec,
            c.state.label(),
            md_escape(c.detected.as_deref().unwrap_or("-")),
            fmt_wall(c.secs),
            md_escape(c.reason.as_deref().unwrap_or(""))
        );
    }
    t.push_str("\n| check |");
    for c in &m.columns {
        let _ = write!(t, " {} |", c.name);
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(m.columns.len()));
    t.push('\n');
    for r in &m.rows {
        let _ = write!(t, "| {} |", md_escape(&r.name));
        for c in &r.cells {
            let _ = write!(t, " {} |", c.state.label());
        }
        t.push('\n');
    }
    t.push_str("\n## Legend\n\n");
    for (s, meaning) in CellState::LEGEND {
        let _ = writeln!(t, "- **{}**: {meaning}", s.label());
    }
    t.push_str("\n## Reasons\n");
    for r in &m.rows {
        render_reasons(&mut t, m, r);
    }
    t
}

/// One check's reasons: each distinct (verdict, reason) once, with the columns that gave
/// it, in the columns' order.
fn render_reasons(t: &mut String, m: &Matrix, r: &Row) {
    let _ = writeln!(t, "\n### {}\n", md_escape(&r.name));
    let mut seen: Vec<(&Cell, Vec<&str>)> = Vec::new();
    for (cell, col) in r.cells.iter().zip(&m.columns) {
        match seen.iter_mut().find(|(c, _)| *c == cell) {
            Some((_, cols)) => cols.push(&col.name),
            None => seen.push((cell, vec![&col.name])),
        }
    }
    for (cell, cols) in seen {
        let reason = if cell.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", md_escape(&cell.reason))
        };
        let _ = writeln!(t, "- {} ({}){reason}", cell.state.label(), cols.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> Column {
        columns().into_iter().find(|c| c.name == name).unwrap()
    }

    fn ran(lines: &[&str], status: i32, problem: Option<&str>, stall: Option<Stall>) -> ColumnRun {
        ColumnRun::Ran {
            report: Report::parse(lines),
            status,
            problem: problem.map(str::to_string),
            stall,
            secs: 1.25,
        }
    }

    #[test]
    fn the_full_set_of_columns() {
        let names: Vec<String> = columns().into_iter().map(|c| c.name).collect();
        assert_eq!(names.len(), 20, "{names:?}");
        assert_eq!(names[0], "plain");
        for p in ["android13", "android14", "android16", "upstream"] {
            for g in ["4k", "16k", "64k"] {
                assert!(names.contains(&format!("model-{p}-{g}")), "{p} {g}");
            }
        }
        for n in [
            "model-kvm",
            "model-pkvm",
            "pkvm-protected",
            "pkvm-ordinary",
            "pkvm-protected-crosvm",
            "pkvm-ordinary-crosvm",
            "pkvm-qemu",
        ] {
            assert!(names.contains(&n.to_string()), "{n}");
        }
        // Names are file names and KTAP-safe.
        for n in &names {
            assert!(
                n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{n}"
            );
        }
        let pk: Vec<_> = columns().into_iter().filter(Column::is_pkvm_host).collect();
        assert_eq!(pk.len(), 5);
        assert_eq!(
            col("pkvm-ordinary-crosvm").spec,
            "pkvm:ordinary,layout=crosvm"
        );
        assert!(!col("model-pkvm").is_pkvm_host() && !col("plain").is_pkvm_host());
        assert_eq!(col("plain").hyp, Hyp::Plain);
        assert_eq!(col("model-upstream-64k").spec, "model:upstream,granule=64k");
    }

    #[test]
    fn selecting_columns() {
        let f = |v: &[&str]| {
            select(
                columns(),
                &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .map(|cs| cs.into_iter().map(|c| c.name).collect::<Vec<_>>())
        };
        assert_eq!(f(&[]).unwrap().len(), 20);
        assert_eq!(
            f(&["model-android14-*", "plain"]).unwrap(),
            [
                "plain",
                "model-android14-4k",
                "model-android14-16k",
                "model-android14-64k"
            ]
        );
        assert_eq!(f(&["pkvm-qemu"]).unwrap(), ["pkvm-qemu"]);
        let e = f(&["plain", "model-android99"]).unwrap_err();
        assert!(
            matches!(&e, MatrixError::UnknownColumn { given, .. } if given == "model-android99")
        );
        let msg = e.to_string();
        assert!(msg.starts_with("--matrix-columns: 'model-android99' matches no column (columns: plain, model-android13-4k"), "{msg}");
        assert!(matches("pkvm*", "pkvm-qemu") && !matches("pkvm", "pkvm-qemu"));
    }

    fn sample() -> Matrix {
        let runs = vec![
            (
                col("plain"),
                ran(
                    &[
                        "ioguard 0.1.0: hypervisor=unknown profile=none granule=0",
                        "PASS: boot: mmu: on",
                        "SKIP: guard: info: profile none has no MMIO guard",
                        "EXIT: STATUS=1",
                    ],
                    0,
                    None,
                    None,
                ),
            ),
            (
                col("model-android13-4k"),
                ran(
                    &[
                        "PASS: boot: mmu",
                        "KFAIL: guard: info: known | <bug>",
                        "XPASS: guard: unmap-return: ok",
                        "EXIT: STATUS=3",
                    ],
                    1,
                    None,
                    None,
                ),
            ),
            (
                col("model-kvm"),
                ran(
                    &["PASS: boot: mmu: on"],
                    124,
                    Some("TIMEOUT: guest did not finish within 60 s"),
                    Some(Stall {
                        running: Some("guard: info".into()),
                        not_run: vec!["guard: unmap-return".into()],
                        ..Stall::default()
                    }),
                ),
            ),
            (
                col("pkvm-qemu"),
                ColumnRun::Unreachable("kit: no network".into()),
            ),
        ];
        Matrix::collect(&runs)
    }

    #[test]
    fn collecting_the_table() {
        let m = sample();
        let names: Vec<&str> = m.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["boot: mmu", "guard: info", "guard: unmap-return"]);
        let states =
            |i: usize| -> Vec<&str> { m.rows[i].cells.iter().map(|c| c.state.label()).collect() };
        assert_eq!(states(0), ["PASS", "PASS", "PASS", "not run"]);
        assert_eq!(states(1), ["SKIP", "KFAIL", "no verdict", "not run"]);
        assert_eq!(states(2), ["not run", "XPASS", "not run", "not run"]);
        let reason = |i: usize, j: usize| m.rows[i].cells[j].reason.as_str();
        assert_eq!(reason(0, 0), "on");
        assert_eq!(reason(0, 1), "");
        assert_eq!(reason(1, 0), "profile none has no MMIO guard");
        assert_eq!(reason(1, 1), "known | <bug>");
        assert_eq!(
            reason(1, 2),
            "it was running when TIMEOUT: guest did not finish within 60 s"
        );
        assert_eq!(
            reason(2, 2),
            "never ran: the run stopped before it (TIMEOUT: guest did not finish within 60 s)"
        );
        assert_eq!(reason(2, 0), "this run printed no result for it");
        assert_eq!(reason(0, 3), "unreachable: kit: no network");
        assert_eq!(m.rows[1].group(), "guard");
        assert_eq!(m.rows[1].case(), "info");
        let states: Vec<ColumnState> = m.columns.iter().map(|c| c.state).collect();
        use ColumnState::*;
        assert_eq!(states, [Passed, Failed, NoVerdict, Unreachable]);
        assert_eq!(
            m.columns[0].detected.as_deref(),
            Some("profile=none granule=0")
        );
        assert_eq!(m.columns[1].detected, None);
        assert_eq!(
            m.columns[2].reason.as_deref(),
            Some("TIMEOUT: guest did not finish within 60 s")
        );
        assert_eq!(m.columns[3].reason.as_deref(), Some("kit: no network"));
        assert_eq!((m.columns[3].status, m.columns[3].secs), (None, None));
        assert_eq!(
            (m.columns[0].status, m.columns[0].secs),
            (Some(0), Some(1.25))
        );
        let counts: Vec<usize> = m.counts().into_iter().map(|(_, n)| n).collect();
        // PASS FAIL SKIP KFAIL XPASS no-verdict not-run
        assert_eq!(counts, [3, 0, 1, 1, 1, 1, 5]);
    }

    #[test]
    fn exit_status_ranks_findings_then_no_verdict_then_unreachable() {
        let m = sample();
        assert_eq!(m.exit_status(), 1);
        let keep = |idx: &[usize]| {
            let mut n = m.clone();
            n.columns = idx.iter().map(|&i| m.columns[i].clone()).collect();
            for r in &mut n.rows {
                r.cells = idx.iter().map(|&i| r.cells[i].clone()).collect();
            }
            n
        };
        assert_eq!(keep(&[0]).exit_status(), 0);
        assert_eq!(keep(&[0, 3]).exit_status(), 3);
        assert_eq!(keep(&[0, 2, 3]).exit_status(), 4);
        assert_eq!(keep(&[1, 2, 3]).exit_status(), 1);
        // A failed column without a FAIL cell (a code-1 exit alone) still fails.
        let mut n = keep(&[0]);
        n.columns[0].state = ColumnState::Failed;
        assert_eq!(n.exit_status(), 1);
        // A FAIL cell in a column that says it passed still fails.
        let mut n = keep(&[0]);
        n.rows[0].cells[0].state = CellState::Result(Kind::Fail);
        assert_eq!(n.exit_status(), 1);
        // The launcher dying mid-run (status 3) is unreachable too.
        assert_eq!(
            state_of(&ran(&[], 3, Some("x"), None)),
            ColumnState::Unreachable
        );
        assert_eq!(state_of(&ran(&[], 2, None, None)), ColumnState::NoVerdict);
        assert_eq!(state_of(&ran(&[], 4, None, None)), ColumnState::NoVerdict);
    }

    #[test]
    fn markdown_escaping() {
        assert_eq!(md_escape("a|b"), "a\\|b");
        assert_eq!(md_escape("<b>&*x*_`"), "\\<b\\>\\&\\*x\\*\\_\\`");
        assert_eq!(
            md_escape("a\\b [c](d) #1 ~s~ !"),
            "a\\\\b \\[c\\](d) \\#1 \\~s\\~ \\!"
        );
        assert_eq!(md_escape("a\nb\u{0}c"), "a b c");
        assert_eq!(md_escape("plain: 0x40-ok, fine."), "plain: 0x40-ok, fine.");
        assert_eq!(fmt_wall(None), "-");
        assert_eq!(fmt_wall(Some(1.25)), "1.2 s");
        assert_eq!(fmt_wall(Some(61.0)), "61.0 s");
    }

    #[test]
    fn markdown() {
        let md = render_markdown(&sample(), "./qemu-run.sh --matrix m");
        let expected_head = "\
# ioguard conformance matrix

Generated by `./qemu-run.sh --matrix m`: 3 checks on 4 hypervisors. A cell is the check's verdict there; its reason is listed under [Reasons](#reasons).

| column | `--hyp` | ended | detected | wall time | why |
|---|---|---|---|---|---|
| plain | `plain` | passed (0) | profile=none granule=0 | 1.2 s |  |
| model-android13-4k | `model:android13,granule=4k` | failed (1) | - | 1.2 s |  |
| model-kvm | `model:kvm` | no verdict (124) | - | 1.2 s | TIMEOUT: guest did not finish within 60 s |
| pkvm-qemu | `pkvm:qemu` | unreachable | - | - | kit: no network |

| check | plain | model-android13-4k | model-kvm | pkvm-qemu |
|---|---|---|---|---|
| boot: mmu | PASS | PASS | PASS | not run |
| guard: info | SKIP | KFAIL | no verdict | not run |
| guard: unmap-return | not run | XPASS | not run | not run |

## Legend

- **PASS**: the check passed
";
        assert!(md.starts_with(expected_head), "{md}");
        for want in [
            "- **not run**: no result: the run stopped before it, or the hypervisor was unreachable\n",
            "\n## Reasons\n\n### boot: mmu\n\n- PASS (plain, model-kvm): on\n- PASS (model-android13-4k)\n- not run (pkvm-qemu): unreachable: kit: no network\n",
            "- KFAIL (model-android13-4k): known \\| \\<bug\\>\n",
            "- no verdict (model-kvm): it was running when TIMEOUT: guest did not finish within 60 s\n",
        ] {
            assert!(md.contains(want), "missing {want:?}\n{md}");
        }
        assert!(
            md.ends_with("- not run (pkvm-qemu): unreachable: kit: no network\n"),
            "{md}"
        );
        assert_eq!(md.matches("\n### ").count(), 3);
    }

    #[test]
    fn legend_labels_and_classes_are_distinct() {
        let labels: Vec<&str> = CellState::LEGEND.iter().map(|(s, _)| s.label()).collect();
        assert_eq!(
            labels,
            [
                "PASS",
                "FAIL",
                "SKIP",
                "KFAIL",
                "XPASS",
                "no verdict",
                "not run"
            ]
        );
        let classes: Vec<&str> = CellState::LEGEND.iter().map(|(s, _)| s.class()).collect();
        assert_eq!(
            classes,
            [
                "pass",
                "fail",
                "skip",
                "kfail",
                "xpass",
                "noverdict",
                "notrun"
            ]
        );
        let col_labels: Vec<&str> = [
            ColumnState::Passed,
            ColumnState::Failed,
            ColumnState::NoVerdict,
            ColumnState::Unreachable,
        ]
        .iter()
        .map(|s| s.label())
        .collect();
        assert_eq!(
            col_labels,
            ["passed", "failed", "no verdict", "unreachable"]
        );
    }
}
