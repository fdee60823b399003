//! Rules of the code the compiler does not check by itself: no product function is over
//! 80 lines (physical lines, signature to closing brace, as a reader sees it). Product
//! code is the guest (`src/`), hypmodel (`hypmodel/src`, `hypmodel/testguest`) and the
//! runner (`runner/src`); unit-test modules and test files are not.

use std::path::{Path, PathBuf};

const LIMIT: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().unwrap() != "tests.rs" {
            out.push(p);
        }
    }
}

/// Whether `line` (trimmed) starts a function item.
fn starts_fn(t: &str) -> bool {
    let mut rest = t;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "unsafe ",
        "extern \"C\" ",
    ] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
        }
    }
    rest.starts_with("fn ")
}

/// (name, first line, length) of every function longer than LIMIT in `src`, up to the
/// first `#[cfg(test)]` at column 0. rustfmt puts a body's closing brace at the indent of
/// its `fn`, which is what ends a function here.
fn long_functions(src: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = src.lines().take_while(|l| *l != "#[cfg(test)]").collect();
    let mut long = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if !starts_fn(t) {
            continue;
        }
        let indent = &l[..l.len() - t.len()];
        let close = format!("{indent}}}");
        let body = lines[i..]
            .iter()
            .position(|x| {
                x.trim_end().ends_with(';')
                    && !x.contains('{')
                    && x.starts_with(indent)
                    && x.len() - x.trim_start().len() == indent.len()
            })
            .filter(|_| !t.contains('{'));
        let end = lines[i..].iter().position(|x| *x == close);
        let n = match (end, body) {
            (_, _) if t.trim_end().ends_with('}') => 1,
            (Some(e), Some(b)) if b < e => continue,
            (Some(e), _) => e + 1,
            (None, _) => continue,
        };
        if n > LIMIT {
            let name = t
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .split(['(', '<'])
                .next()
                .unwrap_or("");
            long.push((name.to_string(), i + 1, n));
        }
    }
    long
}

#[test]
fn no_product_function_is_over_80_lines() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["src", "runner/src", "hypmodel/src", "hypmodel/testguest"] {
        rust_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 40, "found only {} files", files.len());
    let mut long = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        for (name, line, n) in long_functions(&src) {
            long.push(format!(
                "{}:{line}: {name} has {n} lines",
                f.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(long.is_empty(), "over {LIMIT} lines:\n{}", long.join("\n"));
}

#[test]
fn the_counter_counts() {
    let body: String = (0..LIMIT)
        .map(|i| format!("    let x{i} = {i};\n"))
        .collect();
    let src = format!("fn ok() {{\n}}\npub fn long(a: u8) {{\n{body}}}\nfn one() {{ }}\n#[cfg(test)]\nfn ignored() {{\n{body}}}\n");
    assert_eq!(long_functions(&src), [("long".to_string(), 3, LIMIT + 2)]);
}
