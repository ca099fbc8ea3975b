//! Turning the site's resource templates into compiled form, once per site: every templated
//! string and expression is compiled, static mistakes (a missing `files/` entry named by a
//! literal `template:`, an invalid literal mode or path) are found before any node compiles.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use steward_protocol::{is_normal_absolute_path, Mode};

use crate::model::{resource_schema, Bundle, FieldKind, Loc, ResourceTemplate, SiteError};
use crate::template::{ExprTemplate, StrTemplate, TemplateError, Templates};

/// A resource type that may appear in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Package,
    Group,
    File,
    Directory,
    Symlink,
    Service,
    GitClone,
    Swap,
    Exec,
}

impl Kind {
    fn parse(kind: &str) -> Option<Kind> {
        Some(match kind {
            "package" => Kind::Package,
            "group" => Kind::Group,
            "file" => Kind::File,
            "directory" => Kind::Directory,
            "symlink" => Kind::Symlink,
            "service" => Kind::Service,
            "git_clone" => Kind::GitClone,
            "swap" => Kind::Swap,
            "exec" => Kind::Exec,
            _ => return None,
        })
    }
}

/// A compiled field value.
#[derive(Debug, Clone)]
pub(super) enum FieldValue {
    /// A templated string (also enums, checked after rendering).
    Str(StrTemplate),
    /// An integer as given.
    Int(i64),
    /// A boolean as given.
    Bool(bool),
    /// An integer or boolean given as a templated string, parsed after rendering.
    Templated(StrTemplate),
    /// A list of templated strings.
    List(Vec<StrTemplate>),
    /// A map of literal keys to templated strings.
    Map(Vec<(String, StrTemplate)>),
}

/// A compiled field and its line.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub line: u32,
    pub value: FieldValue,
}

/// A compiled resource template.
#[derive(Debug, Clone)]
pub(super) struct PreparedResource {
    /// Line of the list item.
    pub loc: Loc,
    pub kind: Kind,
    /// `bundles.<name>[<index>]`, the prefix of error field paths.
    pub field_path: String,
    pub fields: BTreeMap<&'static str, Field>,
    pub when: Option<ExprTemplate>,
    pub for_each: Option<ExprTemplate>,
    pub requires: Vec<StrTemplate>,
}

impl PreparedResource {
    /// The error field path of `field`.
    pub fn field(&self, field: &str) -> String {
        format!("{}.{field}", self.field_path)
    }

    /// Where `field` is (the item's line when it was not given).
    pub fn loc_of(&self, field: &str) -> Loc {
        match self.fields.get(field) {
            Some(f) => Loc::new(self.loc.file.clone(), f.line),
            None => self.loc.clone(),
        }
    }
}

/// A compiled bundle.
#[derive(Debug, Clone)]
pub(super) struct PreparedBundle {
    pub resources: Vec<PreparedResource>,
}

/// Compiles a bundle; every error found is pushed to `errors`.
pub(super) fn prepare_bundle(
    bundle: &Bundle,
    templates: &mut Templates,
    files: &BTreeMap<String, String>,
    errors: &mut Vec<SiteError>,
) -> PreparedBundle {
    let resources = bundle
        .resources
        .iter()
        .enumerate()
        .filter_map(|(index, template)| {
            let field_path = format!("bundles.{}[{index}]", bundle.name);
            prepare_resource(template, field_path, templates, files, errors)
        })
        .collect();
    PreparedBundle { resources }
}

/// A template syntax error of a field, as a site error at the field's line.
pub(super) fn syntax_error(loc: Loc, field: String, err: TemplateError) -> SiteError {
    match err.file {
        Some(file) => SiteError::new(Loc::new(format!("files/{file}"), err.line), "", err.message),
        None if err.line > 1 => SiteError::new(
            loc,
            field,
            format!("{} (template line {})", err.message, err.line),
        ),
        None => SiteError::new(loc, field, err.message),
    }
}

fn prepare_resource(
    template: &ResourceTemplate,
    field_path: String,
    templates: &mut Templates,
    files: &BTreeMap<String, String>,
    errors: &mut Vec<SiteError>,
) -> Option<PreparedResource> {
    let at = |line: u32| Loc::new(template.loc.file.clone(), line);
    let (Some(kind), Some(schema)) = (Kind::parse(&template.kind), resource_schema(&template.kind))
    else {
        errors.push(SiteError::new(
            template.loc.clone(),
            field_path,
            format!("unknown resource type `{}`", template.kind),
        ));
        return None;
    };
    let errors_before = errors.len();
    let mut compile_str = |line: u32, name: &str, source: &str, errors: &mut Vec<SiteError>| {
        templates
            .string(source)
            .map_err(|err| errors.push(syntax_error(at(line), format!("{field_path}.{name}"), err)))
            .ok()
    };
    let mut fields = BTreeMap::new();
    for (name, (line, value)) in &template.fields {
        let line = *line;
        let Some(field_schema) = schema.iter().find(|f| f.name == name) else {
            errors.push(SiteError::new(
                at(line),
                format!("{field_path}.{name}"),
                format!("unknown field for a `{}` resource", template.kind),
            ));
            continue;
        };
        let name = field_schema.name;
        let wrong_type = |expected: &str| {
            SiteError::new(
                at(line),
                format!("{field_path}.{name}"),
                format!("expected {expected}"),
            )
        };
        let compiled = match (field_schema.kind, value) {
            (FieldKind::Str | FieldKind::Enum(_), Json::String(text)) => {
                compile_str(line, name, text, errors).map(FieldValue::Str)
            }
            (FieldKind::Str, Json::Number(_) | Json::Bool(_)) if name != "mode" => {
                compile_str(line, name, &value.to_string(), errors).map(FieldValue::Str)
            }
            (FieldKind::Str, Json::Number(_)) => {
                errors.push(wrong_type("a quoted octal string such as \"0644\""));
                None
            }
            (FieldKind::Int, Json::Number(number)) => match number.as_i64() {
                Some(int) => Some(FieldValue::Int(int)),
                None => {
                    errors.push(wrong_type("an integer"));
                    None
                }
            },
            (FieldKind::Bool, Json::Bool(flag)) => Some(FieldValue::Bool(*flag)),
            (FieldKind::Int | FieldKind::Bool, Json::String(text)) => {
                compile_str(line, name, text, errors).map(FieldValue::Templated)
            }
            (FieldKind::StrList, Json::Array(items)) => {
                let mut list = Vec::new();
                for item in items {
                    match scalar_text(item) {
                        Some(text) => list.extend(compile_str(line, name, &text, errors)),
                        None => errors.push(wrong_type("a list of strings")),
                    }
                }
                Some(FieldValue::List(list))
            }
            (FieldKind::StrMap, Json::Object(map)) => {
                let mut entries = Vec::new();
                for (key, item) in map {
                    match scalar_text(item) {
                        Some(text) => entries.extend(
                            compile_str(line, name, &text, errors).map(|t| (key.clone(), t)),
                        ),
                        None => errors.push(wrong_type("a map of strings")),
                    }
                }
                Some(FieldValue::Map(entries))
            }
            (kind, _) => {
                errors.push(wrong_type(match kind {
                    FieldKind::Str | FieldKind::Enum(_) => "a string",
                    FieldKind::Int => "an integer",
                    FieldKind::Bool => "true or false",
                    FieldKind::StrList => "a list of strings",
                    FieldKind::StrMap => "a map of strings",
                }));
                None
            }
        };
        if let Some(value) = compiled {
            fields.insert(name, Field { line, value });
        }
    }
    for required in schema.iter().filter(|f| f.required) {
        if !template.fields.contains_key(required.name) {
            errors.push(SiteError::new(
                template.loc.clone(),
                format!("{field_path}.{}", required.name),
                format!("missing required field for a `{}` resource", template.kind),
            ));
        }
    }
    let mut expression = |source: &Option<String>, name: &str, errors: &mut Vec<SiteError>| {
        source.as_ref().and_then(|source| {
            templates
                .expression(source)
                .map_err(|err| {
                    errors.push(syntax_error(
                        template.loc.clone(),
                        format!("{field_path}.{name}"),
                        err,
                    ))
                })
                .ok()
        })
    };
    let when = expression(&template.when, "when", errors);
    let for_each = expression(&template.for_each, "for_each", errors);
    let mut requires = Vec::new();
    for id in &template.requires {
        match templates.string(id) {
            Ok(compiled) => requires.push(compiled),
            Err(err) => errors.push(syntax_error(
                template.loc.clone(),
                format!("{field_path}.requires"),
                err,
            )),
        }
    }
    let prepared = PreparedResource {
        loc: template.loc.clone(),
        kind,
        field_path,
        fields,
        when,
        for_each,
        requires,
    };
    // Static checks only make sense on a template whose fields all compiled.
    if errors.len() == errors_before {
        check_static(&prepared, templates, files, errors);
    }
    (errors.len() == errors_before).then_some(prepared)
}

fn scalar_text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(_) | Json::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

/// Checks what can be known before any node compiles.
fn check_static(
    resource: &PreparedResource,
    templates: &Templates,
    files: &BTreeMap<String, String>,
    errors: &mut Vec<SiteError>,
) {
    let literal = |name: &str| match resource.fields.get(name).map(|f| &f.value) {
        Some(FieldValue::Str(template)) => template.as_literal(),
        _ => None,
    };
    let error = |name: &str, message: String| {
        SiteError::new(resource.loc_of(name), resource.field(name), message)
    };
    if resource.kind == Kind::File {
        let given: Vec<&str> = ["template", "source", "content"]
            .into_iter()
            .filter(|name| resource.fields.contains_key(name))
            .collect();
        if given.len() != 1 {
            errors.push(SiteError::new(
                resource.loc.clone(),
                resource.field("content"),
                format!(
                    "a file takes exactly one of `template`, `source` or `content` (given: {})",
                    if given.is_empty() {
                        "none".to_string()
                    } else {
                        given.join(", ")
                    }
                ),
            ));
        }
        if literal("replace") == Some("if_marked") && !resource.fields.contains_key("marker") {
            errors.push(error(
                "replace",
                "`replace: if_marked` needs a `marker`".into(),
            ));
        }
        if let Some(name) = literal("template") {
            if let Some(err) = templates.file_error(name) {
                errors.push(SiteError::new(
                    Loc::new(format!("files/{name}"), err.line),
                    "",
                    err.message.clone(),
                ));
            } else if !files.contains_key(name) {
                errors.push(error(
                    "template",
                    format!("no file `files/{name}` in the site"),
                ));
            }
        }
        if let Some(name) = literal("source") {
            if !files.contains_key(name) {
                errors.push(error(
                    "source",
                    format!("no file `files/{name}` in the site"),
                ));
            }
        }
    }
    if let Some(mode) = literal("mode") {
        if Mode::parse(mode).is_none() {
            errors.push(error(
                "mode",
                format!("invalid mode `{mode}`: expected octal such as \"0644\""),
            ));
        }
    }
    for name in ["path", "target", "cwd", "creates"] {
        if let Some(path) = literal(name) {
            if !is_normal_path(path) {
                errors.push(error(name, path_message(path)));
            }
        }
    }
}

/// [`is_normal_absolute_path`], with a single byte pass for ASCII paths (the hot path checks
/// every rendered path).
pub(super) fn is_normal_path(path: &str) -> bool {
    if !path.is_ascii() {
        return is_normal_absolute_path(path);
    }
    let bytes = path.as_bytes();
    if bytes == b"/" {
        return true;
    }
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    for i in 1..=bytes.len() {
        if i == bytes.len() || bytes[i] == b'/' {
            let component = &bytes[start..i];
            if component.is_empty() || component == b"." || component == b".." {
                return false;
            }
            start = i + 1;
        } else if bytes[i] < 0x20 || bytes[i] == 0x7f {
            return false;
        }
    }
    true
}

/// The message for a path that is not absolute and normalized.
pub(super) fn path_message(path: &str) -> String {
    format!("path {path:?} must be absolute and normalized (no `..`, `.`, `//`, trailing `/` or control characters)")
}
