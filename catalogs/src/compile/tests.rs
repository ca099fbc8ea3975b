//! Unit tests of the compiler's small parts; whole-site behaviour is tested in
//! `catalogs/tests/compile_*.rs` with fixtures.

use super::glob::glob_match;

#[test]
fn glob_table() {
    for (pattern, name, expected) in [
        ("devvm", "devvm", true),
        ("devvm", "devvm2", false),
        ("devvm-*", "devvm-1", true),
        ("devvm-*", "devvm-", true),
        ("devvm-*", "devvm", false),
        ("ws-*", "ws-01.lab", true),
        ("*", "anything", true),
        ("*", "", true),
        ("ws-??", "ws-01", true),
        ("ws-??", "ws-1", false),
        ("*-*-*", "a-b-c", true),
        ("*-*-*", "a-b", false),
        ("a*b*c", "aXXbYYbZZc", true),
        ("a*b*c", "aXXbYYbZZ", false),
        ("*.lab", "ws.lab", true),
        ("?", "é", true),
        ("", "", true),
        ("", "a", false),
    ] {
        assert_eq!(glob_match(pattern, name), expected, "{pattern} vs {name}");
    }
}

#[test]
fn glob_does_not_blow_up_on_many_stars() {
    let pattern = "*a".repeat(30) + "b";
    let name = "a".repeat(200);
    assert!(!glob_match(&pattern, &name));
}

#[test]
fn fast_path_check_agrees_with_the_protocol() {
    use steward_protocol::is_normal_absolute_path;
    for path in [
        "",
        "/",
        "//",
        "/a",
        "/a/",
        "/a//b",
        "/a/./b",
        "/a/../b",
        "/.",
        "/..",
        "/a/..b/c..",
        "relative",
        "/a\nb",
        "/a\0b",
        "/a\x7fb",
        "/é",
        "/a\u{85}b",
        "/home/emo/.claude",
        "/.hidden",
        "/a/b/.",
        "/a/b/..",
    ] {
        assert_eq!(
            super::prepare::is_normal_path(path),
            is_normal_absolute_path(path),
            "{path:?}"
        );
    }
}
