//! docs/matrix/ is the conformance matrix as `./qemu-run.sh --matrix docs/matrix --smp 2`
//! (or `bench/matrix.sh docs/matrix --smp 2`) wrote it. These tests fail when it no longer
//! matches the code: its columns must be `--matrix`'s columns, its rows the checks a
//! default run executes (DEFAULT_CHECKS), and every cell must be what that column's own
//! TAP file, written by the same run, says. Regenerate it when one fails.

mod common;
use common::DEFAULT_CHECKS;
use ioguard_runner::matrix::columns;
use std::path::PathBuf;

const REGENERATE: &str = "regenerate it with: bench/matrix.sh docs/matrix --smp 2";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/matrix")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name))
        .unwrap_or_else(|e| panic!("docs/matrix/{name}: {e}; {REGENERATE}"))
}

/// The `| a | b |` cells of a Markdown table line.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

/// The check table of matrix.md: its header's column names and each row's cells.
fn check_table(md: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = md.lines().skip_while(|l| !l.starts_with("| check |"));
    let header = cells(lines.next().expect("a check table"));
    let rows = lines
        .skip(1)
        .take_while(|l| l.starts_with("| "))
        .map(cells)
        .collect();
    (header[1..].to_vec(), rows)
}

/// A check's label in a TAP13 file as the runner writes it (render_tap).
fn tap_label(tap: &str, check: &str) -> Option<&'static str> {
    tap.lines().find_map(|l| {
        let (ok, rest) = match l.strip_prefix("ok ") {
            Some(r) => (true, r),
            None => (false, l.strip_prefix("not ok ")?),
        };
        let rest = rest.split_once(" - ")?.1;
        let (name, directive) = rest.split_once(" # ").unwrap_or((rest, ""));
        let name = name.trim_end_matches(" (XPASS: passed, but a failure was expected)");
        if name != check {
            return None;
        }
        Some(match (ok, directive) {
            (true, "") => "PASS",
            (true, _) => "SKIP",
            (false, d) if d.starts_with("TODO") => "KFAIL",
            (false, _) if rest.contains("(XPASS") => "XPASS",
            (false, _) => "FAIL",
        })
    })
}

#[test]
fn the_matrix_has_every_column_and_every_check() {
    let md = read("matrix.md");
    let (cols, rows) = check_table(&md);
    let want: Vec<String> = columns().into_iter().map(|c| c.name).collect();
    assert_eq!(
        cols, want,
        "docs/matrix/matrix.md's columns are stale; {REGENERATE}"
    );
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names, DEFAULT_CHECKS,
        "docs/matrix/matrix.md's rows are stale; {REGENERATE}"
    );
    // The same in the page.
    let html = read("matrix.html");
    let in_page: Vec<&str> = html
        .split("<tr data-check=\"")
        .skip(1)
        .map(|r| &r[..r.find('"').unwrap()])
        .collect();
    assert_eq!(
        in_page, DEFAULT_CHECKS,
        "docs/matrix/matrix.html is stale; {REGENERATE}"
    );
    for c in &want {
        assert!(
            html.contains(&format!("data-column=\"{c}\" title=\"--hyp ")),
            "{c}"
        );
    }
}

#[test]
fn every_cell_is_its_columns_own_result() {
    let md = read("matrix.md");
    let (cols, rows) = check_table(&md);
    for (j, col) in cols.iter().enumerate() {
        let tap = read(&format!("{col}.tap"));
        for row in &rows {
            let want = tap_label(&tap, &row[0]).unwrap_or("not run");
            assert_eq!(row[j + 1], want, "{} in {col}; {REGENERATE}", row[0]);
        }
        let ktap = read(&format!("{col}.ktap"));
        assert!(ktap.starts_with("KTAP version 1\n"), "{col}.ktap");
    }
    // The matrix says every column ended with a verdict and nothing failed.
    assert!(
        !md.contains("| FAIL |") && !md.contains("| XPASS |"),
        "{md}"
    );
    assert_eq!(md.matches("| passed (0) |").count(), cols.len(), "{md}");
}

const SUMMARY_BEGIN: &str =
    "<!-- matrix summary: written by tests/matrix_doc.rs from docs/matrix/matrix.md; \
                             IOGUARD_BLESS=1 cargo test --test matrix_doc rewrites it -->";
const SUMMARY_END: &str = "<!-- end of matrix summary -->";

/// The README's view of the matrix: each column's verdicts, counted from matrix.md.
fn summary(md: &str) -> String {
    let (cols, rows) = check_table(md);
    let mut s = format!(
        "Each column's verdicts over the {} default checks, counted from that file:\n\n\
         | column | PASS | KFAIL | SKIP | FAIL or XPASS | no verdict or not run |\n\
         |---|---|---|---|---|---|\n",
        rows.len()
    );
    for (j, col) in cols.iter().enumerate() {
        let count = |kinds: &[&str]| {
            rows.iter()
                .filter(|r| kinds.contains(&r[j + 1].as_str()))
                .count()
        };
        let counted = [
            count(&["PASS"]),
            count(&["KFAIL"]),
            count(&["SKIP"]),
            count(&["FAIL", "XPASS"]),
        ];
        let rest = rows.len() - counted.iter().sum::<usize>();
        let [pass, kfail, skip, fail] = counted;
        s += &format!("| {col} | {pass} | {kfail} | {skip} | {fail} | {rest} |\n");
    }
    s
}

#[test]
fn the_readme_shows_the_current_matrix() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let want = summary(&read("matrix.md"));
    let start = readme
        .find(SUMMARY_BEGIN)
        .expect("README.md has no matrix summary block")
        + SUMMARY_BEGIN.len();
    let end = start + readme[start..].find(SUMMARY_END).expect("the block's end");
    let have = readme[start..end].trim();
    if std::env::var_os("IOGUARD_BLESS").is_some() && have != want.trim() {
        let new = format!("{}\n{}\n{}", &readme[..start], want.trim(), &readme[end..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        have,
        want.trim(),
        "README.md's matrix summary is stale: IOGUARD_BLESS=1 cargo test --test matrix_doc"
    );
}
