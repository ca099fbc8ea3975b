//! Hostname globs: `*` matches any run of characters (also none), `?` exactly one. Nothing
//! else is special. Hand-written so the compiler needs no regex engine.

/// Whether `name` matches `pattern`.
///
/// ```
/// use steward_catalogs::compile::glob_match;
/// assert!(glob_match("devvm-*", "devvm-2"));
/// assert!(glob_match("ws-??", "ws-01"));
/// assert!(!glob_match("devvm-*", "devvm"));
/// ```
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if pattern.is_ascii() && name.is_ascii() {
        matches(pattern.as_bytes(), name.as_bytes(), b'*', b'?')
    } else {
        let pattern: Vec<char> = pattern.chars().collect();
        let name: Vec<char> = name.chars().collect();
        matches(&pattern, &name, '*', '?')
    }
}

/// Linear-time wildcard matching with one backtrack point (the last `*` seen): a later `*`
/// subsumes every earlier choice, so no deeper backtracking is ever needed.
fn matches<T: PartialEq + Copy>(pattern: &[T], name: &[T], star: T, any: T) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == star {
            backtrack = Some((p, n));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == any || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = backtrack {
            p = star_p + 1;
            n = star_n + 1;
            backtrack = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == star)
}
