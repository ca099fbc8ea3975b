//! Unit tests of the template layer.

use minijinja::context;

use super::*;

#[test]
fn interpolation_fast_path_agrees_with_the_engine() {
    let mut templates = Templates::new(&BTreeMap::new());
    let ctx = context! {
        user => context! { name => "emo", home => "/home/emo", port => 3774, flags => context!{} },
        item => "skills",
    };
    for (source, expected) in [
        (
            "{{ user.home }}/.claude/{{ item }}",
            Some("/home/emo/.claude/skills"),
        ),
        ("PORT={{ user.port }}", Some("PORT=3774")),
        ("{{user.name}}", Some("emo")),
        ("{{ user.name | upper }}", Some("EMO")),
        ("{{ user.flags.ha }}", None),
        ("{{ nope }}", None),
    ] {
        let template = templates.string(source).unwrap();
        let rendered = templates.render(&template, &ctx);
        assert_eq!(rendered.as_deref().ok(), expected, "{source}");
        if let StrKind::Interpolation { name, .. } = &template.kind {
            assert_eq!(
                templates.render_named(name, &ctx).ok().as_deref(),
                expected,
                "{source}"
            );
        }
    }
}

#[test]
fn parse_interpolation_refuses_anything_but_lookups() {
    assert!(parse_interpolation("a{{ b.c }}d").is_some());
    for source in [
        "{{- a }}",
        "{{ a | b }}",
        "{{ a }}{% if x %}{% endif %}",
        "{{ a[0] }}",
        "a }} b {{ c }}",
    ] {
        assert!(parse_interpolation(source).is_none(), "{source}");
    }
}

#[test]
fn syntax_errors_carry_the_line() {
    let mut templates = Templates::new(&BTreeMap::new());
    let err = templates.string("a\n{{ foo }\nb").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.message.starts_with("syntax error"), "{}", err.message);
    let err = templates.expression("user.flags.ha and").unwrap_err();
    assert!(err.message.starts_with("syntax error"), "{}", err.message);
}

#[test]
fn fast_expressions_agree_with_the_engine() {
    let mut templates = Templates::new(&BTreeMap::new());
    let ctx = context! {
        user => context! { code_layout => "single", repos => vec!["a", "b"], port => 1 },
    };
    for source in [
        "user.code_layout == \"single\"",
        "user.code_layout != 'single'",
        "user.code_layout == 'workspace'",
        "user.repos",
        "user.port == '1'",
    ] {
        let expr = templates.expression(source).unwrap();
        let fast = templates.eval(&expr, &ctx).unwrap();
        let slow = ExprTemplate {
            fast: None,
            ..expr.clone()
        };
        assert_eq!(fast, templates.eval(&slow, &ctx).unwrap(), "{source}");
    }
    let expr = templates.expression("user.nope").unwrap();
    let err = templates.eval(&expr, &ctx).unwrap_err();
    assert_eq!(err.message, "undefined value (at `user.nope`)");
}

#[test]
fn referenced_templates_are_found_or_unknowable() {
    assert_eq!(
        referenced_templates(
            "{% include 'a.j2' %}{%- from \"b.j2\" import m -%}{% if x %}{% endif %}"
        ),
        Some(vec!["a.j2".to_string(), "b.j2".to_string()])
    );
    assert_eq!(
        referenced_templates("{% include 'a' if x else 'b' %}"),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(referenced_templates("{% include name %}"), None);
    assert_eq!(referenced_templates("no blocks {{ x }}"), Some(vec![]));
}

#[test]
fn file_inputs_include_what_includes_read() {
    let files = BTreeMap::from([
        (
            "a.j2".to_string(),
            "{% include 'b.j2' %}{{ user.home }}{{ user.flags.x }}".to_string(),
        ),
        (
            "b.j2".to_string(),
            "{{ site.url }}{{ tier.name }}".to_string(),
        ),
        ("c.j2".to_string(), "{% include computed %}".to_string()),
        ("d.j2".to_string(), "{{ debug() }}".to_string()),
    ]);
    let templates = Templates::new(&files);
    let show = |name: &str| {
        templates.file_inputs[name]
            .as_ref()
            .map(|paths| paths.iter().map(|p| p.join(".")).collect::<Vec<_>>())
    };
    assert_eq!(
        show("a.j2"),
        Some(vec![
            "site.url".into(),
            "tier.name".into(),
            "user.flags.x".into(),
            "user.home".into()
        ])
    );
    assert_eq!(show("c.j2"), None);
    assert_eq!(show("d.j2"), None);
}
