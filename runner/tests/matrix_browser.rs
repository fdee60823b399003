//! `--matrix` end to end, read in a real browser: the `ioguard-run` binary runs a reduced
//! matrix (plain QEMU and two hypmodel profiles: `--matrix-columns`; the full set is
//! measured by bench/matrix.sh), headless Chromium renders `matrix.html`, and the cells
//! read back from the rendered DOM must be each column's own results, as its TAP file
//! says. A screenshot of the page is written to `target/matrix-browser/matrix.png` (the
//! test prints the path; `cargo test --test matrix_browser -- --nocapture` shows it).
//!
//! Needs Debian's `chromium` (the test fails, it does not skip, when it is missing) and
//! qemu-system-aarch64.

use ioguard_runner::target_dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ioguard-run");
const CHROMIUM_INSTALL: &str =
    "apt-get update && apt-get install -y --no-install-recommends chromium";
const COLUMNS: &[&str] = &["plain", "model-android14-4k", "model-android13-16k"];

/// Headless Chromium on `page` with `args`; its stdout. Root needs `--no-sandbox`; each
/// call gets its own profile directory so that calls never share a browser.
fn chromium(page: &Path, args: &[&str], profile: &str) -> String {
    let dir = target_dir().join("matrix-browser").join(profile);
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("chromium is not installed; install it (as root) with:\n  {CHROMIUM_INSTALL}")
        }
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Undo the escaping of an attribute value or text as a browser serialises it.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the start tag `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[at..].find('"')? + at;
    Some(unescape(&tag[at..end]))
}

/// A cell read back: its text and its title (the reason).
type Cells = BTreeMap<(String, String), (String, String)>;

/// Every `<td data-column>` of every `<tr data-check>` in the rendered DOM.
fn cells_of(dom: &str) -> Cells {
    let mut cells = Cells::new();
    for row in dom.split("<tr ").skip(1) {
        let row = &row[..row.find("</tr>").unwrap_or(row.len())];
        let Some(check) = attr(
            &format!(" {}", &row[..row.find('>').unwrap()]),
            "data-check",
        ) else {
            continue;
        };
        for td in row.split("<td ").skip(1) {
            let open_end = td.find('>').unwrap();
            let tag = format!(" {}", &td[..open_end]);
            let text = &td[open_end + 1..td.find("</td>").unwrap()];
            let column = attr(&tag, "data-column").expect("a cell names its column");
            let title = attr(&tag, "title").unwrap_or_default();
            cells.insert((check.clone(), column), (unescape(text), title));
        }
    }
    cells
}

/// One column's TAP13 file read as (check, label, reason).
fn tap_results(file: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let (ok, rest) = if let Some(r) = l.strip_prefix("ok ") {
            (true, r)
        } else if let Some(r) = l.strip_prefix("not ok ") {
            (false, r)
        } else {
            continue;
        };
        let rest = rest.split_once(" - ").unwrap().1;
        let (name, directive) = match rest.split_once(" # ") {
            Some((n, d)) => (n, Some(d)),
            None => (rest, None),
        };
        // A point's YAML block (`---`, then `message: "..."`) follows it directly.
        let message = (lines.get(i + 1).map(|l| l.trim()) == Some("---"))
            .then(|| lines.get(i + 2))
            .flatten()
            .and_then(|m| m.trim().strip_prefix("message: \""))
            .map(|m| {
                m.trim_end_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            });
        let (label, name, reason) = match (ok, directive) {
            (true, None) => ("PASS", name, message.unwrap_or_default()),
            (true, Some(d)) => (
                "SKIP",
                name,
                d.trim_start_matches("SKIP").trim().replace("\\#", "#"),
            ),
            (false, Some(d)) => (
                "KFAIL",
                name,
                d.trim_start_matches("TODO known failure: ")
                    .replace("\\#", "#"),
            ),
            (false, None) => {
                match name.strip_suffix(" (XPASS: passed, but a failure was expected)") {
                    Some(n) => ("XPASS", n, message.unwrap_or_default()),
                    None => ("FAIL", name, message.unwrap_or_default()),
                }
            }
        };
        v.push((name.to_string(), label.to_string(), reason));
    }
    v
}

#[test]
fn the_rendered_matrix_shows_each_columns_own_results() {
    let dir: PathBuf = target_dir().join("matrix-browser").join("out");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BIN)
        .arg("--matrix")
        .arg(&dir)
        .args(["--matrix-columns", &COLUMNS.join(","), "--smp", "2"])
        .output()
        .expect("ioguard-run runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("x {} columns", COLUMNS.len())),
        "{said}"
    );
    let page = dir.join("matrix.html");
    let dom = chromium(&page, &["--dump-dom"], "dom");
    let cells = cells_of(&dom);
    let mut compared = 0;
    for col in COLUMNS {
        let results = tap_results(&dir.join(format!("{col}.tap")));
        assert!(results.len() >= 50, "{col}: {results:?}");
        for (check, label, reason) in results {
            let (text, title) = cells
                .get(&(check.clone(), col.to_string()))
                .unwrap_or_else(|| panic!("no cell for {check} in {col}"));
            assert_eq!(text, &label, "{check} in {col}");
            assert_eq!(title, &reason, "{check} in {col}");
            compared += 1;
        }
    }
    // Nothing in the page that no column's TAP accounts for.
    assert_eq!(cells.len(), compared, "{cells:?}");
    // The verdicts that tell the columns apart are where they should be.
    let label = |c: &str, col: &str| cells[&(c.to_string(), col.to_string())].0.clone();
    assert_eq!(label("guard: stray-read", "plain"), "SKIP");
    assert_eq!(label("guard: stray-read", "model-android14-4k"), "PASS");
    assert_eq!(label("guard: unmap-return", "model-android13-16k"), "KFAIL");
    assert_eq!(label("control: stray-forwarded", "plain"), "PASS");
    // The legend and a header per column survive rendering.
    for col in COLUMNS {
        assert!(
            dom.contains(&format!("data-column=\"{col}\" title=\"--hyp ")),
            "{col}"
        );
    }
    assert!(dom.contains("<td class=\"kfail\">KFAIL</td>"), "no legend");

    let shot = target_dir().join("matrix-browser").join("matrix.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,1950",
        ],
        "shot",
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
