//! Check names. A check is a function in its group's file under `kernel/suite/`; its name
//! on the output line is `group: case`, where the case is the function's name written
//! with hyphens (`stray_read` is `guard: stray-read`). The name is made at compile time
//! from the identifier, so a check cannot be renamed without renaming its function.

/// `s` with every `_` turned into `-`, as a fixed-size array (`N` = `s.len()`).
pub const fn kebab<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if b[i] == b'_' { b'-' } else { b[i] };
        i += 1;
    }
    out
}

/// `check_name!("guard", stray_read)` is `"guard: stray-read"`, a `&'static str`.
#[macro_export]
macro_rules! check_name {
    ($group:literal, $f:ident) => {{
        const S: &str = concat!($group, ": ", stringify!($f));
        const B: [u8; S.len()] = $crate::checks::kebab::<{ S.len() }>(S);
        match core::str::from_utf8(&B) {
            Ok(s) => s,
            Err(_) => panic!("a check name is ASCII"),
        }
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_come_from_identifiers() {
        assert_eq!(crate::check_name!("guard", stray_read), "guard: stray-read");
        assert_eq!(
            crate::check_name!("guard", granule_16k),
            "guard: granule-16k"
        );
        assert_eq!(crate::check_name!("ioremap", windows), "ioremap: windows");
    }
}
