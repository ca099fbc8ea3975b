//! Tests for the YAML tree: positions, core-schema typing, and every refusal.

use insta::assert_snapshot;
use proptest::prelude::*;

use crate::yaml::{parse, Node, NodeValue, Resolved, MAX_NODES};

/// Renders a tree on one line: every node as `value@line:col`, scalars typed.
fn show(node: &Node) -> String {
    let at = format!("@{}:{}", node.line, node.col);
    match &node.value {
        NodeValue::Scalar(s) => {
            let typed = match s.resolve() {
                Resolved::Null => "null".to_owned(),
                Resolved::Bool(b) => format!("bool {b}"),
                Resolved::Int(i) => format!("int {i}"),
                Resolved::Float(f) => format!("float {f}"),
                Resolved::Str(t) => format!("{t:?}"),
            };
            format!("{typed}{at}")
        }
        NodeValue::Seq(items) => {
            let inner: Vec<String> = items.iter().map(show).collect();
            format!("[{}]{at}", inner.join(", "))
        }
        NodeValue::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", show(k), show(v)))
                .collect();
            format!("{{{}}}{at}", inner.join(", "))
        }
    }
}

/// Parses and renders the tree, or the error.
fn check(text: &str) -> String {
    match parse(text) {
        Ok(node) => show(&node),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn seed_roster_keeps_lines_and_columns() {
    let text = "\
users:
  emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }
  ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner,
               namespaces: [plotting-book], code_layout: workspace, repos: [tripit] }
  # gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner }
";
    assert_snapshot!(check(text), @r#"{"users"@1:1: {"emo"@2:3: {"authentik_user"@2:16: "emil.barzin"@2:32, "k8s_user"@2:45: "emo"@2:55, "tier"@2:60: "power-user"@2:66}@2:14, "ancamilea"@3:3: {"authentik_user"@3:16: "ancaelena98"@3:32, "k8s_user"@3:45: "anca"@3:55, "tier"@3:61: "namespace-owner"@3:67, "namespaces"@4:16: ["plotting-book"@4:29]@4:28, "code_layout"@4:45: "workspace"@4:58, "repos"@4:69: ["tripit"@4:77]@4:76}@3:14}@2:3}@1:1"#);
}

#[test]
fn core_schema_typing() {
    let text = "\
a: [true, True, FALSE, yes, no, on, off]
b: [12, -3, +4, 0o17, 0x1f, 0755, 012]
c: [1.5, .5, 1., -2e3, .inf, -.Inf]
d: [null, Null, ~, '', \"\"]
e: ['true', \"12\", !!str 13, ! 14, !!int 15, !!bool false]
f:
g: |
  block 12
";
    assert_snapshot!(check(text), @r#"{"a"@1:1: [bool true@1:5, bool true@1:11, bool false@1:17, "yes"@1:24, "no"@1:29, "on"@1:33, "off"@1:37]@1:4, "b"@2:1: [int 12@2:5, int -3@2:9, int 4@2:13, int 15@2:17, int 31@2:23, int 755@2:29, int 12@2:35]@2:4, "c"@3:1: [float 1.5@3:5, float 0.5@3:10, float 1@3:14, float -2000@3:18, float inf@3:24, float -inf@3:30]@3:4, "d"@4:1: [null@4:5, null@4:11, null@4:17, ""@4:20, ""@4:24]@4:4, "e"@5:1: ["true"@5:5, "12"@5:13, "13"@5:25, "14"@5:31, int 15@5:41, bool false@5:52]@5:4, "f"@6:1: null@6:1, "g"@7:1: "block 12\n"@8:3}@1:1"#);
}

#[test]
fn empty_stream_is_null() {
    assert_snapshot!(check(""), @"null@1:1");
    assert_snapshot!(check("# only a comment\n"), @"null@1:1");
}

#[test]
fn syntax_error_has_line_and_column() {
    assert_snapshot!(check("a: 1\nb: [1, 2\n"), @"error: line 3, column 1: while parsing a flow sequence, expected ',' or ']'");
    assert_snapshot!(check("a: 1\n  b: 2\n"), @"error: line 2, column 4: mapping values are not allowed in this context");
}

#[test]
fn duplicate_key_names_both_lines() {
    assert_snapshot!(check("a: 1\nb: 2\na: 3\n"), @r#"error: line 3, column 1: duplicate key "a" (first defined on line 1); remove one of them"#);
    // Keys compare by text: `true` and "true" would be the same key in every consumer.
    assert_snapshot!(check("{true: 1, 'true': 2}"), @r#"error: line 1, column 11: duplicate key "true" (first defined on line 1); remove one of them"#);
    assert_snapshot!(check("users:\n  emo: { tier: a, tier: b }\n"), @r#"error: line 2, column 19: duplicate key "tier" (first defined on line 2); remove one of them"#);
}

#[test]
fn complex_keys_are_refused() {
    assert_snapshot!(check("? [a, b]\n: 1\n"), @"error: line 1, column 3: mapping keys must be plain values, not lists or mappings");
}

#[test]
fn more_than_one_document_is_refused() {
    assert_snapshot!(check("a: 1\n---\nb: 2\n"), @"error: line 2, column 1: more than one document in one file; remove the second `---` or split the file");
    // One explicit document is fine.
    assert_snapshot!(check("---\na: 1\n...\n"), @r#"{"a"@2:1: int 1@2:4}@2:1"#);
}

#[test]
fn tags_other_than_core_are_refused() {
    assert_snapshot!(check("a: !!binary aGk=\n"), @r#"error: line 1, column 13: tag "!!binary" is not supported; only the core tags !!str, !!int, !!bool, !!null, !!float, !!seq and !!map are"#);
    assert_snapshot!(check("a: !vault secret/x\n"), @r#"error: line 1, column 11: tag "!vault" is not supported; only the core tags !!str, !!int, !!bool, !!null, !!float, !!seq and !!map are"#);
    assert_snapshot!(check("a: !!set {x}\n"), @r#"error: line 1, column 10: tag "!!set" is not supported; only the core tags !!str, !!int, !!bool, !!null, !!float, !!seq and !!map are"#);
    assert_snapshot!(check("a: !!int twelve\n"), @"error: line 1, column 10: value does not match its tag !!int");
    assert_snapshot!(check("a: !!map [1]\n"), @"error: line 1, column 10: value does not match its tag !!map");
    assert_snapshot!(check("a: !!seq [1]\nb: !!map {x: 1}\n"), @r#"{"a"@1:1: [int 1@1:11]@1:10, "b"@2:1: {"x"@2:11: int 1@2:14}@2:10}@1:1"#);
}

#[test]
fn integers_out_of_range_are_refused() {
    assert_snapshot!(check("uid: 99999999999999999999\n"), @"error: line 1, column 6: integer is out of range (more than 64 bits); quote it if it is text");
    assert_snapshot!(check("uid: '99999999999999999999'\n"), @r#"{"uid"@1:1: "99999999999999999999"@1:6}@1:1"#);
    assert_snapshot!(check("a: -9223372036854775808\n"), @r#"{"a"@1:1: int -9223372036854775808@1:4}@1:1"#);
}

#[test]
fn raw_control_characters_are_refused() {
    assert_snapshot!(check("a: b\nc: d\u{1}e\n"), @"error: line 2, column 5: control character U+0001 is not allowed; remove it or write it as an escape in a double-quoted string");
    // Tabs and CRLF line ends are fine.
    assert_snapshot!(check("a: \"x\ty\"\r\nb: 2\r\n"), @r#"{"a"@1:1: "x\ty"@1:4, "b"@2:1: int 2@2:4}@1:1"#);
}

#[test]
fn oversize_input_is_refused() {
    let text = format!("a: \"{}\"\n", "x".repeat(crate::yaml::MAX_INPUT_BYTES));
    assert_snapshot!(check(&text), @"error: line 1, column 1: file is 4194310 bytes, more than the limit of 4194304; split it up");
}

#[test]
fn deep_nesting_is_refused() {
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(parse(&ok).is_ok());
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_snapshot!(check(&deep), @"error: line 1, column 65: nesting is deeper than 64 levels");
    // Far deeper input fails just as fast, without recursion.
    let very_deep = "[".repeat(1_000_000);
    // (The scanner's own limit may trip first while it looks ahead; same message.)
    assert_snapshot!(check(&very_deep), @"error: line 1, column 256: nesting is deeper than 64 levels");
    let block = (0..100)
        .map(|i| format!("{}- x\n", "  ".repeat(i)))
        .collect::<String>();
    assert!(parse(&block).is_ok(), "block lists at one level each");
    let nested_maps = (0..100)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
        .collect::<String>();
    assert_snapshot!(check(&nested_maps), @"error: line 65, column 132: nesting is deeper than 64 levels");
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let text = "\
base: &base { shell: /bin/zsh, groups: [a, b] }
emo: *base
list: [&x 1, *x]
";
    assert_snapshot!(check(text), @r#"{"base"@1:1: {"shell"@1:15: "/bin/zsh"@1:22, "groups"@1:32: ["a"@1:41, "b"@1:44]@1:40}@1:13, "emo"@2:1: {"shell"@1:15: "/bin/zsh"@1:22, "groups"@1:32: ["a"@1:41, "b"@1:44]@1:40}@2:6, "list"@3:1: [int 1@3:11, int 1@3:14]@3:7}@1:1"#);
    // `<<` is an ordinary key in YAML 1.2.
    assert_snapshot!(check("a: &a {x: 1}\nb: {<<: *a}\n"), @r#"{"a"@1:1: {"x"@1:8: int 1@1:11}@1:7, "b"@2:1: {"<<"@2:5: {"x"@1:8: int 1@1:11}@2:9}@2:4}@1:1"#);
}

#[test]
fn unknown_and_recursive_aliases_are_refused() {
    assert_snapshot!(check("a: *nope\n"), @"error: line 1, column 4: while parsing node, found unknown anchor");
    assert_snapshot!(check("a: &a [1, *a]\n"), @"error: line 1, column 11: alias refers to a node that contains it (recursive alias)");
}

/// The classic "billion laughs": ten levels, each ten aliases of the previous one.
fn alias_bomb() -> String {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text
}

#[test]
fn alias_bomb_is_refused_quickly() {
    // Fully expanded this is 10^10 nodes: that the parser answers at all shows it counts
    // expansions without materializing them (no timing assertion: machines here are noisy).
    assert_snapshot!(check(&alias_bomb()), @"error: line 6, column 10: document has more than 200000 nodes after expanding aliases; is this an alias bomb?");
}

#[test]
fn alias_bomb_in_flow_keys_position_is_refused_too() {
    // Same bomb, one line, nested flow sequences.
    let text = "[&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]";
    let err = parse(text).unwrap_err();
    assert!(err.message.contains("alias bomb"), "{err}");
}

#[test]
fn large_normal_document_is_fine() {
    let mut text = String::from("items:\n");
    for i in 0..20_000 {
        text.push_str(&format!("  - {{ name: n{i}, value: {i} }}\n"));
    }
    let node = parse(&text).unwrap();
    assert_eq!(
        node.get("items").and_then(Node::as_seq).map(<[Node]>::len),
        Some(20_000)
    );
    const { assert!(20_000 * 5 < MAX_NODES) };
}

#[test]
fn scanner_error_does_not_echo_input_characters() {
    // A stray character in a Vault file must not reach a log line.
    let err = parse("a: 1\n%\n").unwrap_err();
    assert!(
        !err.message.contains('%') || err.message.contains("directive"),
        "{err}"
    );
}

#[test]
fn to_json_types_values() {
    let node = parse("a: [1, true, ~, x, '2', 1.5]\nb: {c: d}\n").unwrap();
    assert_snapshot!(node.to_json().unwrap().to_string(), @r#"{"a":[1,true,null,"x","2",1.5],"b":{"c":"d"}}"#);
    let err = parse("a: .nan\n").unwrap().to_json().unwrap_err();
    assert_snapshot!(err.to_string(), @"line 1, column 4: infinite or nan numbers are not supported; quote the value");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in ".{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_yamlish_text(text in "[-:\\[\\]{},&*!|>'\" \n#a-c0-9?%@`~.]{0,120}") {
        if let Ok(node) = parse(&text) {
            let _ = node.to_json();
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse(&text);
    }
}

#[test]
fn errors_at_end_of_input_point_at_the_last_line() {
    assert_snapshot!(check("a: { b"), @"error: line 1, column 7: while parsing a flow mapping, did not find expected ',' or '}'");
    assert_snapshot!(check("a: 1\rb: [\r"), @"error: line 3, column 1: while parsing a node, did not find expected node content");
}

#[test]
fn too_many_nodes_without_aliases_says_so() {
    let text = "- x\n".repeat(MAX_NODES);
    assert_snapshot!(check(&text), @"error: line 200000, column 3: document has more than 200000 nodes; split it up");
}

#[test]
fn nodes_at_end_of_input_point_at_the_last_line() {
    assert_snapshot!(check("!"), @r#"""@1:2"#);
    assert_snapshot!(check("a:"), @r#"{"a"@1:1: null@1:3}@1:1"#);
}
