//! docs/CHECKS.md is generated from the checks' declarations: each group's file under
//! src/kernel/suite/ declares its checks with `checks!("group": f, ...)`, and each
//! function's doc comment is its row. These tests fail when the committed file is stale
//! (`IOGUARD_BLESS=1 cargo test --test docs` rewrites it) and when the guest's own `list`
//! disagrees with it.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A declared check: its name, its file, whether it runs by default, its doc comment.
#[derive(Debug)]
struct Declared {
    name: String,
    file: String,
    default: bool,
    doc: String,
}

/// The group modules in run order, as `GROUPS` in suite/mod.rs lists them.
fn group_order(suite_mod: &str) -> Vec<String> {
    let start = suite_mod
        .find("const GROUPS")
        .expect("GROUPS in suite/mod.rs");
    let body = &suite_mod[start..];
    let body = &body[body.find("= &[").expect("GROUPS = &[") + 4..body.find("];").unwrap()];
    body.split(',')
        .filter_map(|e| e.trim().strip_suffix("::CHECKS"))
        .map(str::to_string)
        .collect()
}

/// `checks!([explicit] "group": f, g, ...)` of one file.
fn declaration(src: &str) -> (String, bool, Vec<String>) {
    let start = src.find("\nchecks!(").expect("a checks! declaration") + "\nchecks!(".len();
    let inner = &src[start..start + src[start..].find(");").unwrap()];
    let (head, list) = inner.split_once(':').unwrap();
    let default = !head.trim().starts_with("explicit");
    let group = head
        .trim()
        .trim_start_matches("explicit")
        .trim()
        .trim_matches('"');
    let fns = list
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    (group.to_string(), default, fns)
}

/// The `///` lines right above `pub fn name(`, joined.
fn doc_of(src: &str, name: &str) -> String {
    let lines: Vec<&str> = src.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("pub fn {name}(")))
        .unwrap_or_else(|| panic!("no `pub fn {name}(`"));
    let mut doc: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with("///"))
        .map(|l| l.trim_start_matches("///").trim())
        .collect();
    doc.reverse();
    doc.join(" ")
}

fn module_doc(src: &str) -> String {
    src.lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ")
}

fn declared() -> Vec<(String, String, Vec<Declared>)> {
    let suite = root().join("src/kernel/suite");
    let order = group_order(&std::fs::read_to_string(suite.join("mod.rs")).unwrap());
    order
        .iter()
        .map(|m| {
            let file = format!("src/kernel/suite/{m}.rs");
            let src = std::fs::read_to_string(root().join(&file)).unwrap();
            let (group, default, fns) = declaration(&src);
            let checks = fns
                .iter()
                .map(|f| Declared {
                    name: format!("{group}: {}", f.replace('_', "-")),
                    file: file.clone(),
                    default,
                    doc: doc_of(&src, f),
                })
                .collect();
            (file, module_doc(&src), checks)
        })
        .collect()
}

fn render() -> String {
    let mut out = String::from(
        "# ioguard: the checks\n\n\
         Generated from the checks' declarations (`checks!` in each group's file under\n\
         `src/kernel/suite/`, and each check function's doc comment) by\n\
         `IOGUARD_BLESS=1 cargo test --test docs`; a test fails when this file is stale.\n\n\
         One boot runs them in this order. A check's name is `group: case`; the case is its\n\
         function's name with hyphens, in the group's file. \"Expect\" is what a correct\n\
         hypervisor of the detected profile does (profiles: [DESIGN.md](DESIGN.md)); a SKIP\n\
         always says why, a KFAIL names the known deviation of the profile.\n",
    );
    for (file, intro, checks) in declared() {
        let group = checks[0].name.split(':').next().unwrap().to_string();
        out += &format!("\n## `{group}:` (`{file}`)\n\n{intro}\n\n");
        if !checks[0].default {
            out += "These run only when named exactly (`only=selftest:panic`).\n\n";
        }
        out += "| check | expect |\n|---|---|\n";
        for c in checks {
            out += &format!("| `{}` | {} |\n", c.name, c.doc.replace('|', "\\|"));
        }
    }
    out
}

#[test]
fn checks_md_is_generated_from_the_declarations() {
    let path = root().join("docs/CHECKS.md");
    let want = render();
    if std::env::var_os("IOGUARD_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/CHECKS.md is stale: run `IOGUARD_BLESS=1 cargo test --test docs`"
    );
}

#[test]
fn every_check_has_a_doc_row_and_lives_in_its_groups_file() {
    for (_, _, checks) in declared() {
        for c in checks {
            assert!(!c.doc.is_empty(), "{} has no doc comment", c.name);
            let group = c.name.split(':').next().unwrap();
            assert!(
                Path::new(&c.file).file_stem().unwrap() == group,
                "{} is declared in {}",
                c.name,
                c.file
            );
        }
    }
}

#[test]
fn the_guests_list_is_the_documented_list() {
    let out = run(&["--append", "list"]);
    let listed: Vec<String> = out
        .report
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("LIST: "))
        .map(str::to_string)
        .collect();
    let documented: Vec<String> = declared()
        .into_iter()
        .flat_map(|(_, _, c)| c)
        .filter(|c| c.default)
        .map(|c| c.name)
        .collect();
    assert_eq!(listed, documented, "{}", out.transcript());
    // And the documented file says the same.
    let md = std::fs::read_to_string(root().join("docs/CHECKS.md")).unwrap();
    for name in &listed {
        assert!(
            md.contains(&format!("| `{name}` |")),
            "{name} not in docs/CHECKS.md"
        );
    }
    assert_eq!(listed, DEFAULT_CHECKS, "tests/common.rs's list is stale");
}
