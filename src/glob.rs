//! Shell-style glob matching (`*` and `?`) for `only=` selections.

/// Whether `text` matches `pattern`, where `*` matches any run of characters (including
/// none) and `?` exactly one. Iterative with one backtrack point, so no pattern can make it
/// take more than `O(len(pattern) * len(text))` steps.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: &[u8] = pattern.as_bytes();
    let t: &[u8] = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_and_wildcards() {
        assert!(matches("boot:mmu", "boot:mmu"));
        assert!(!matches("boot:mmu", "boot:mmux"));
        assert!(!matches("boot:mmux", "boot:mmu"));
        assert!(matches("boot:*", "boot:device-tree"));
        assert!(matches("*", ""));
        assert!(matches("*tree", "boot:device-tree"));
        assert!(matches("b??t:*", "boot:vectors"));
        assert!(!matches("b?t:*", "boot:vectors"));
        assert!(matches("*:*-*", "guard:stray-read"));
        assert!(!matches("guard:*", "boot:mmu"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn pathological_pattern_terminates() {
        let text = "a".repeat(200);
        assert!(!matches("*a*a*a*a*a*b", &text));
    }
}
