//! The minijinja layer of the compiler: one [`Environment`] per site, every templated string
//! and expression compiled once, and the `secret()` / `vault()` functions with taint tracking.
//!
//! Nothing here knows about resources: [`crate::compile`] decides which string is a path and
//! which is file content, and turns a `TemplateError` into a `FILE:LINE` site error.
//!
//! Choices that matter to site authors:
//! - **Strict undefined**: printing, iterating, testing or reading an attribute of an undefined
//!   value is an error, never an empty string (`x is defined` and `x | default(..)` still work).
//! - **No auto-escaping**, whatever the file extension: output is exactly what the template
//!   says; JSON is emitted with `tojson`.
//! - Trailing newlines are kept, so a file template ends the way its source ends.
//! - Every file under `files/` is registered under its relative name (so `{% include %}` and
//!   `template:` use the same names). A file that does not parse as a template is an error only
//!   when it is used as one, so a verbatim `source:` file (a shell script with `${#x}`) may
//!   contain anything.
//!
//! Vault data reaches templates only through `secret(path, key)` and `vault(path, key)`, which
//! read a per-compile `Tracker` passed in the context under `TRACKER_VAR`. The tracker
//! records which paths were read and whether the current render called `secret()`; the
//! compiler resets the flag before each render and checks it after, which is how content that
//! read a secret becomes sensitive and how a secret in a path or a name is refused.
//!
//! The hot path avoids the engine where the result is provably the same:
//! - strings without template syntax are literals;
//! - `text {{ a.b }} text` is resolved directly when every lookup is a string or an integer,
//!   and `a.b`, `a.b == "x"`, `a.b != "x"` expressions when the lookup is defined (anything
//!   else, including every error, goes through the engine);
//! - file and content renders are memoized per compile, keyed by the values of the context
//!   paths the template reads (found statically, includes followed; a computed include name or
//!   `debug()` disables it), so the same `AGENTS.md` for fifty users is rendered once; a hit
//!   replays whether the render called `secret()`.
//! - the root context is a `RenderContext` object and JSON maps become `DataMap` objects, so
//!   variable and attribute lookups do not allocate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::value::{Enumerator, Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};
use steward_protocol::Secret;

use crate::model::VaultData;

/// Context variable holding the per-compile [`Tracker`]. Reserved: templates must not set it.
pub(crate) const TRACKER_VAR: &str = "__steward";

/// Variable an expression's value is assigned to in its wrapper template.
const EXPR_VAR: &str = "__steward_value";

/// Prefix of the names of internal templates (fields and expressions). A NUL can never occur
/// in a file name, so these never collide with `files/**`.
const INTERNAL_PREFIX: char = '\0';

/// A template error, located in the template it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    /// `None`: in the templated string or expression itself. `Some(name)`: in the site file
    /// `files/<name>` (a file template, or one it included).
    pub(crate) file: Option<String>,
    /// 1-based line inside that template (0 when unknown).
    pub(crate) line: u32,
    /// Lowercase message: what went wrong and the failing source text when known. Never a
    /// rendered value.
    pub(crate) message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(name) => write!(f, "files/{name}:{}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// A compiled templated string.
#[derive(Debug, Clone)]
pub(crate) struct StrTemplate {
    kind: StrKind,
    /// Whether the source spans several lines (errors then say which line).
    multiline: bool,
    /// The context paths the output depends on (see [`Templates::render_memoized`]).
    inputs: Option<Vec<Vec<String>>>,
}

#[derive(Debug, Clone)]
enum StrKind {
    /// No template syntax at all: the text itself.
    Literal(String),
    /// Only text and `{{ a.b.c }}` lookups: resolved without the template engine when every
    /// lookup yields a string or an integer, else rendered by `name`.
    Interpolation { parts: Vec<Part>, name: String },
    /// Anything else: rendered by the template engine.
    Jinja { name: String },
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Lookup(Vec<String>),
}

impl StrTemplate {
    /// The text, if the template has no template syntax.
    pub(crate) fn as_literal(&self) -> Option<&str> {
        match &self.kind {
            StrKind::Literal(text) => Some(text),
            _ => None,
        }
    }

    /// Whether the source spans several lines.
    pub(crate) fn is_multiline(&self) -> bool {
        self.multiline
    }
}

/// A compiled expression (`when`, `for_each`).
#[derive(Debug, Clone)]
pub(crate) struct ExprTemplate {
    /// The expression, for messages.
    source: String,
    /// A shape evaluated without the template engine when its lookup is defined.
    fast: Option<FastExpr>,
    /// Wrapper template `{% set __steward_value = (EXPR) %}`.
    name: String,
}

#[derive(Debug, Clone)]
enum FastExpr {
    /// `a.b.c`.
    Lookup(Vec<String>),
    /// `a.b.c == "text"` or `a.b.c != "text"` (`equal` false), for a string `a.b.c`.
    Compare {
        path: Vec<String>,
        equal: bool,
        text: String,
    },
}

/// The per-site template environment.
pub(crate) struct Templates {
    env: Environment<'static>,
    /// Files that do not parse as templates, with their syntax error.
    broken_files: BTreeMap<String, TemplateError>,
    /// Per file template: the context values its output depends on (dotted paths, its
    /// includes' too), or `None` when that cannot be known statically. A render is memoized
    /// per compile under those values.
    file_inputs: HashMap<String, Option<Vec<Vec<String>>>>,
    /// Counter for internal template names.
    next_id: usize,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("templates", &self.next_id)
            .field(
                "broken_files",
                &self.broken_files.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Templates {
    /// An environment with every site file registered as a template.
    pub(crate) fn new(files: &BTreeMap<String, String>) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        // Debug mode would snapshot variable values into errors; errors must never carry a
        // value (a secret could be among them), and release and debug builds must agree.
        env.set_debug(false);
        env.add_function("secret", secret);
        env.add_function("vault", vault);
        let mut broken_files = BTreeMap::new();
        for (name, source) in files {
            if let Err(err) = env.add_template_owned(name.clone(), source.clone()) {
                let located = locate(&err, Some(source));
                broken_files.insert(
                    name.clone(),
                    TemplateError {
                        file: Some(name.clone()),
                        line: located.line,
                        message: located.message,
                    },
                );
            }
        }
        let file_inputs = file_inputs(&env, files);
        Templates {
            env,
            broken_files,
            file_inputs,
            next_id: 0,
        }
    }

    fn internal_name(&mut self, what: char) -> String {
        self.next_id += 1;
        format!("{INTERNAL_PREFIX}{what}{}", self.next_id)
    }

    /// Compiles a templated string. Strings without template syntax cost nothing to render.
    pub(crate) fn string(&mut self, source: &str) -> Result<StrTemplate, TemplateError> {
        let multiline = source.trim_end_matches('\n').contains('\n');
        if !has_template_syntax(source) {
            return Ok(StrTemplate {
                kind: StrKind::Literal(source.to_string()),
                multiline,
                inputs: None,
            });
        }
        let name = self.internal_name('s');
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|err| locate(&err, Some(source)))?;
        let inputs = self.inputs_of(&name);
        let kind = match parse_interpolation(source) {
            Some(parts) => StrKind::Interpolation { parts, name },
            None => StrKind::Jinja { name },
        };
        Ok(StrTemplate {
            kind,
            multiline,
            inputs,
        })
    }

    /// Compiles an expression (checked as an expression, so it cannot smuggle in statements).
    pub(crate) fn expression(&mut self, source: &str) -> Result<ExprTemplate, TemplateError> {
        self.env
            .compile_expression(source)
            .map_err(|err| locate(&err, Some(source)))?;
        let name = self.internal_name('e');
        let wrapper = format!("{{% set {EXPR_VAR} = ({source}) %}}");
        self.env
            .add_template_owned(name.clone(), wrapper)
            .map_err(|err| locate(&err, Some(source)))?;
        Ok(ExprTemplate {
            source: source.trim().to_string(),
            fast: parse_fast_expr(source.trim()),
            name,
        })
    }

    /// The syntax error of `files/<name>`, if it does not parse as a template.
    pub(crate) fn file_error(&self, name: &str) -> Option<&TemplateError> {
        self.broken_files.get(name)
    }

    /// Renders a templated string.
    pub(crate) fn render(
        &self,
        template: &StrTemplate,
        ctx: &Value,
    ) -> Result<String, TemplateError> {
        match &template.kind {
            StrKind::Literal(text) => Ok(text.clone()),
            StrKind::Interpolation { parts, name } => match interpolate(parts, ctx) {
                Some(text) => Ok(text),
                None => self.render_named(name, ctx),
            },
            StrKind::Jinja { name } => self.render_named(name, ctx),
        }
    }

    /// Renders the site file `files/<name>` as a template, and says whether it called
    /// `secret()`. With `memoize`, renders of one compile (one `tracker`) whose inputs are
    /// equal are done once: the same `~/.codex/AGENTS.md` for fifty users is rendered once.
    pub(crate) fn render_file(
        &self,
        name: &str,
        ctx: &Value,
        tracker: &Tracker,
        memoize: bool,
    ) -> Result<(String, bool), TemplateError> {
        if let Some(err) = self.broken_files.get(name) {
            return Err(err.clone());
        }
        let Some(inputs) = self.file_inputs.get(name) else {
            return Err(TemplateError {
                file: None,
                line: 0,
                message: format!("no file `files/{name}` in the site"),
            });
        };
        let inputs = inputs.as_ref().filter(|_| memoize);
        memoized(name, inputs, ctx, tracker, || self.render_named(name, ctx))
    }

    /// Renders a templated string that is file content, and says whether it called
    /// `secret()`; memoized like [`Templates::render_file`].
    pub(crate) fn render_memoized(
        &self,
        template: &StrTemplate,
        ctx: &Value,
        tracker: &Tracker,
        memoize: bool,
    ) -> Result<(String, bool), TemplateError> {
        let name = match &template.kind {
            StrKind::Literal(text) => return Ok((text.clone(), false)),
            StrKind::Interpolation { name, .. } | StrKind::Jinja { name } => name,
        };
        let inputs = template.inputs.as_ref().filter(|_| memoize);
        memoized(name, inputs, ctx, tracker, || self.render(template, ctx))
    }

    /// What the template `name` reads: its own variables and those of every template it
    /// references (files only); `None` when unknowable.
    fn inputs_of(&self, name: &str) -> Option<Vec<Vec<String>>> {
        let template = self.env.get_template(name).ok()?;
        let vars: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
        if vars.contains("debug") {
            return None;
        }
        let mut paths: Vec<Vec<String>> = vars
            .iter()
            .map(|v| v.split('.').map(str::to_string).collect())
            .collect();
        for referenced in referenced_templates(template.source())? {
            if let Some(inputs) = self.file_inputs.get(&referenced) {
                paths.extend(inputs.clone()?);
            }
        }
        Some(shortest_prefixes(paths))
    }

    /// Evaluates an expression. An undefined result is an error (strict undefined).
    pub(crate) fn eval(&self, expr: &ExprTemplate, ctx: &Value) -> Result<Value, TemplateError> {
        match &expr.fast {
            Some(FastExpr::Lookup(path)) => {
                if let Some(value) = resolve(path, ctx) {
                    return Ok(value);
                }
            }
            Some(FastExpr::Compare { path, equal, text }) => {
                if let Some(value) = resolve(path, ctx).filter(|v| v.as_str().is_some()) {
                    return Ok(Value::from(
                        (value.as_str() == Some(text.as_str())) == *equal,
                    ));
                }
            }
            None => {}
        }
        let template = self
            .env
            .get_template(&expr.name)
            .map_err(|err| self.locate(&err))?;
        let captured = template
            .render_captured(ctx)
            .map_err(|err| self.locate(&err))?;
        match captured.state().lookup(EXPR_VAR) {
            Some(value) if !value.is_undefined() => Ok(value),
            _ => Err(TemplateError {
                file: None,
                line: 1,
                message: format!("undefined value (at `{}`)", expr.source),
            }),
        }
    }

    fn render_named(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        self.env
            .get_template(name)
            .and_then(|template| template.render(ctx))
            .map_err(|err| self.locate(&err))
    }

    /// Maps an engine error to the template it happened in, with the failing source text.
    fn locate(&self, err: &Error) -> TemplateError {
        let name = err.name().unwrap_or_default();
        let source = self
            .env
            .get_template(name)
            .ok()
            .map(|t| t.source().to_string());
        let mut located = locate(err, source.as_deref());
        if !name.is_empty() && !name.starts_with(INTERNAL_PREFIX) {
            located.file = Some(name.to_string());
        }
        located
    }
}

/// Builds a [`TemplateError`] (with `file: None`) from an engine error and the source of the
/// template it names.
fn locate(err: &Error, source: Option<&str>) -> TemplateError {
    let is_vault_error = std::error::Error::source(err).is_some_and(|s| s.is::<VaultLookupError>());
    let mut message = match (err.kind(), err.detail()) {
        (_, Some(detail)) if is_vault_error => detail.to_string(),
        (ErrorKind::UndefinedError, _) => "undefined value".to_string(),
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    let snippet = err
        .range()
        .zip(source)
        .and_then(|(mut range, source)| {
            // An attribute error's span starts at the `.`: show the whole `a.b.c`.
            while range.start > 0
                && source.as_bytes()[range.start - 1].is_ascii()
                && (source.as_bytes()[range.start - 1].is_ascii_alphanumeric()
                    || matches!(source.as_bytes()[range.start - 1], b'_' | b'.'))
            {
                range.start -= 1;
            }
            source.get(range)
        })
        .map(|text| text.trim())
        .filter(|text| !text.is_empty() && !text.contains('\n') && text.len() <= 120);
    if let Some(text) = snippet {
        message.push_str(&format!(" (at `{}`)", text.replace(EXPR_VAR, "")));
    }
    TemplateError {
        file: None,
        line: err
            .line()
            .map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
        message,
    }
}

/// Renders through the compile's memo when `inputs` is known: the key is the template and
/// the values of its inputs, and a hit replays the output and whether it called `secret()`.
fn memoized(
    name: &str,
    inputs: Option<&Vec<Vec<String>>>,
    ctx: &Value,
    tracker: &Tracker,
    render: impl FnOnce() -> Result<String, TemplateError>,
) -> Result<(String, bool), TemplateError> {
    let key = inputs.filter(|_| tracker.memo_worth_it(name)).map(|paths| {
        let mut key = String::with_capacity(128);
        key.push_str(name);
        for path in paths {
            key.push('\0');
            match resolve(path, ctx) {
                Some(value) => {
                    let _ = write!(key, "{value:?}");
                }
                None => key.push_str("undefined"),
            }
        }
        key
    });
    if let Some(key) = &key {
        if let Some(hit) = tracker.memo_get(name, key) {
            return Ok(hit);
        }
    }
    tracker.reset();
    let text = render()?;
    let read_secret = tracker.secret_used();
    if let Some(key) = key {
        tracker.memo_put(key, &text, read_secret);
    }
    Ok((text, read_secret))
}

/// `user` covers `user.home`: keeps only the shortest prefixes, sorted.
fn shortest_prefixes(mut paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
    paths.sort();
    paths.dedup();
    let mut kept: Vec<Vec<String>> = Vec::new();
    for path in paths {
        if !kept.iter().any(|p| path.starts_with(p)) {
            kept.push(path);
        }
    }
    kept
}

/// What each file template's output depends on: the dotted context paths it reads
/// (statically), with those of the templates it includes, imports or extends. `None` when a
/// referenced template name is not a literal, or the template calls `debug()` (which prints
/// the whole context).
fn file_inputs(
    env: &Environment<'static>,
    files: &BTreeMap<String, String>,
) -> HashMap<String, Option<Vec<Vec<String>>>> {
    // Per file: the variables it reads and the templates it references (None: unknowable).
    type Analysed = Option<(BTreeSet<String>, Vec<String>)>;
    let mut own: HashMap<&str, Analysed> = HashMap::new();
    for name in files.keys() {
        let Ok(template) = env.get_template(name) else {
            continue;
        };
        let vars: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
        let analysed = if vars.contains("debug") {
            None
        } else {
            referenced_templates(template.source()).map(|refs| (vars, refs))
        };
        own.insert(name.as_str(), analysed);
    }
    let mut inputs = HashMap::new();
    for name in own.keys() {
        // Union over everything reachable through includes; any unknown part poisons it.
        let mut vars = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![*name];
        let mut known = true;
        while let Some(current) = stack.pop() {
            if !seen.insert(current) {
                continue;
            }
            match own.get(current) {
                Some(Some((own_vars, refs))) => {
                    vars.extend(own_vars.iter().cloned());
                    stack.extend(refs.iter().map(String::as_str));
                }
                Some(None) => known = false,
                // A missing template fails the render anyway.
                None => {}
            }
        }
        let paths = known.then(|| {
            shortest_prefixes(
                vars.iter()
                    .map(|v| v.split('.').map(str::to_string).collect())
                    .collect(),
            )
        });
        inputs.insert(name.to_string(), paths);
    }
    inputs
}

/// The template names of `{% include %}`, `{% import %}`, `{% from %}` and `{% extends %}`
/// blocks; `None` when such a block names no string literal (a computed name).
fn referenced_templates(source: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let block = &rest[start + 2..];
        let end = block.find("%}").unwrap_or(block.len());
        let body = block[..end].trim_start_matches(['-', '+', ' ', '\t', '\n', '\r']);
        let keyword = body
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or_default();
        if matches!(keyword, "include" | "import" | "from" | "extends") {
            let before = names.len();
            let mut literals = body;
            while let Some(open) = literals.find(['"', '\'']) {
                let quote = &literals[open..open + 1];
                let literal = &literals[open + 1..];
                let close = literal.find(quote)?;
                names.push(literal[..close].to_string());
                literals = &literal[close + 1..];
            }
            if names.len() == before {
                return None;
            }
        }
        rest = &block[end.min(block.len())..];
    }
    Some(names)
}

fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// `a.b.c` (identifiers only) → its parts.
fn parse_lookup(expr: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = expr.split('.').map(str::to_string).collect();
    let is_ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    parts.iter().all(|p| is_ident(p)).then_some(parts)
}

/// `a.b.c`, `a.b.c == "text"` or `a.b.c != 'text'` (no escapes in the literal).
fn parse_fast_expr(expr: &str) -> Option<FastExpr> {
    for (operator, equal) in [("==", true), ("!=", false)] {
        if let Some((left, right)) = expr.split_once(operator) {
            let right = right.trim();
            let quote = right.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let text = right.strip_prefix(quote)?.strip_suffix(quote)?;
            if text.contains(quote) || text.contains('\\') {
                return None;
            }
            return Some(FastExpr::Compare {
                path: parse_lookup(left.trim())?,
                equal,
                text: text.to_string(),
            });
        }
    }
    parse_lookup(expr).map(FastExpr::Lookup)
}

/// Text and `{{ a.b.c }}` only → the parts; anything else (filters, whitespace control,
/// statements, comments) → `None`.
fn parse_interpolation(source: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let text = &rest[..start];
        if text.contains("}}") || has_template_syntax(text) {
            return None;
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.to_string()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        parts.push(Part::Lookup(parse_lookup(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if rest.contains("}}") || has_template_syntax(rest) {
        return None;
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Some(parts)
}

/// Looks `a.b.c` up in a context; `None` when any step is undefined.
fn resolve(path: &[String], ctx: &Value) -> Option<Value> {
    let mut value = ctx.get_attr(path.first()?).ok()?;
    for key in &path[1..] {
        if value.is_undefined() {
            return None;
        }
        value = value.get_attr(key).ok()?;
    }
    (!value.is_undefined()).then_some(value)
}

/// Renders an interpolation without the engine, when every lookup yields a string or an
/// integer (whose rendering is unambiguous); `None` sends it to the engine, which produces
/// the same text or the precise error.
fn interpolate(parts: &[Part], ctx: &Value) -> Option<String> {
    let mut out = String::with_capacity(64);
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Lookup(path) => {
                let value = resolve(path, ctx)?;
                if let Some(text) = value.as_str() {
                    out.push_str(text);
                } else if let Some(number) = value.as_i64().filter(|_| value.is_integer()) {
                    out.push_str(&number.to_string());
                } else {
                    return None;
                }
            }
        }
    }
    Some(out)
}

/// Converts JSON data (site and tier `vars`, flags) into a template value whose maps are
/// looked up by name without allocating a key.
pub(crate) fn data_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Object(map) => Value::from_object(DataMap(
            map.iter()
                .map(|(key, value)| (key.clone(), data_value(value)))
                .collect(),
        )),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(data_value).collect::<Vec<_>>())
        }
        other => Value::from_serialize(other),
    }
}

/// [`data_value`] of a JSON object given as a map.
pub(crate) fn data_map(map: &BTreeMap<String, serde_json::Value>) -> Value {
    Value::from_object(DataMap(
        map.iter()
            .map(|(key, value)| (key.clone(), data_value(value)))
            .collect(),
    ))
}

/// A JSON object as a template value (see [`data_value`]).
#[derive(Debug)]
struct DataMap(BTreeMap<String, Value>);

impl Object for DataMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|key| self.0.get(key).cloned())
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.0.get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys().map(|key| Value::from(key.as_str())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The root context of a render: `site`, `host`, `users` and the tracker; in user bundles
/// also `user` and `tier`; in `for_each` also `item`. A dedicated object rather than a map, so
/// every variable lookup is a `match` on the name.
#[derive(Debug, Clone)]
pub(crate) struct RenderContext {
    /// `site`: the site's vars.
    pub(crate) site: Value,
    /// `host`: `{name, class}`.
    pub(crate) host: Value,
    /// `users`: the node's present users.
    pub(crate) users: Value,
    /// The per-compile [`Tracker`] (as [`TRACKER_VAR`]).
    pub(crate) tracker: Value,
    /// `user`, in user bundles.
    pub(crate) user: Option<Value>,
    /// `tier`, in user bundles.
    pub(crate) tier: Option<Value>,
    /// `item`, in `for_each`.
    pub(crate) item: Option<Value>,
}

impl RenderContext {
    /// As a context value.
    pub(crate) fn into_value(self) -> Value {
        Value::from_object(self)
    }

    /// The context inside a value made by [`RenderContext::into_value`].
    pub(crate) fn of(value: &Value) -> Option<&RenderContext> {
        value.downcast_object_ref::<RenderContext>()
    }

    fn get(&self, key: &str) -> Option<Value> {
        match key {
            "site" => Some(self.site.clone()),
            "host" => Some(self.host.clone()),
            "users" => Some(self.users.clone()),
            TRACKER_VAR => Some(self.tracker.clone()),
            "user" => self.user.clone(),
            "tier" => self.tier.clone(),
            "item" => self.item.clone(),
            _ => None,
        }
    }
}

impl Object for RenderContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|key| self.get(key))
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.get(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = ["site", "host", "users", TRACKER_VAR, "user", "tier", "item"]
            .into_iter()
            .filter(|key| self.get(key).is_some())
            .map(Value::from)
            .collect();
        Enumerator::Values(keys)
    }
}

/// Per-compile state shared with `secret()` / `vault()` through the context.
pub(crate) struct Tracker {
    vault: VaultData,
    secret_used: AtomicBool,
    paths_read: Mutex<BTreeSet<String>>,
    missing_paths: Mutex<BTreeSet<String>>,
    secrets: Mutex<Vec<Secret>>,
    memo: Mutex<Memo>,
}

/// Memoized file renders of one compile.
#[derive(Default)]
struct Memo {
    /// Key → (output, called `secret()`). Outputs are kept as [`Secret`] so they are zeroed
    /// when the compile ends.
    entries: HashMap<String, (Secret, bool)>,
    /// Per template: (hits, misses). A template that keeps missing (a per-user kubeconfig) is
    /// not worth building keys for.
    stats: HashMap<String, (u32, u32)>,
}

impl Memo {
    fn worth_it(&self, name: &str) -> bool {
        self.stats
            .get(name)
            .is_none_or(|(hits, misses)| *hits > 0 || *misses < 3)
    }
}

impl fmt::Debug for Tracker {
    // Never prints Vault data: the `debug()` template function formats the context with this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<steward>")
    }
}

impl Object for Tracker {
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<steward>")
    }
}

impl Tracker {
    /// A tracker over this compile's Vault data, as a context value.
    pub(crate) fn new_value(vault: &VaultData) -> Value {
        Value::from_object(Tracker {
            vault: vault.clone(),
            secret_used: AtomicBool::new(false),
            paths_read: Mutex::new(BTreeSet::new()),
            missing_paths: Mutex::new(BTreeSet::new()),
            secrets: Mutex::new(Vec::new()),
            memo: Mutex::new(Memo::default()),
        })
    }

    fn memo_worth_it(&self, name: &str) -> bool {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .worth_it(name)
    }

    fn memo_get(&self, name: &str, key: &str) -> Option<(String, bool)> {
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        let found = memo
            .entries
            .get(key)
            .map(|(text, read_secret)| (text.expose().to_string(), *read_secret));
        let stats = memo.stats.entry(name.to_string()).or_default();
        match found {
            Some(_) => stats.0 += 1,
            None => stats.1 += 1,
        }
        found
    }

    fn memo_put(&self, key: String, text: &str, read_secret: bool) {
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        memo.entries
            .insert(key, (Secret::new(text.to_string()), read_secret));
    }

    /// The tracker inside a value made by [`Tracker::new_value`].
    pub(crate) fn of(value: &Value) -> &Tracker {
        value
            .downcast_object_ref::<Tracker>()
            .expect("the tracker value holds a Tracker")
    }

    /// Vault paths a template asked for that the compile's Vault data does not hold.
    pub(crate) fn missing_paths(&self) -> BTreeSet<String> {
        self.missing_paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Clears the "this render called `secret()`" flag.
    pub(crate) fn reset(&self) {
        self.secret_used.store(false, Ordering::Relaxed);
    }

    /// Whether `secret()` was called since the last [`Tracker::reset`].
    pub(crate) fn secret_used(&self) -> bool {
        self.secret_used.load(Ordering::Relaxed)
    }

    /// Vault paths read so far.
    pub(crate) fn paths_read(&self) -> BTreeSet<String> {
        self.paths_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces every value returned by `secret()` in `message` with `<redacted>`.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut message = message.to_string();
        for secret in secrets.iter() {
            if !secret.expose().is_empty() && message.contains(secret.expose()) {
                message = message.replace(secret.expose(), steward_protocol::REDACTED);
            }
        }
        message
    }
}

/// Marks the errors raised by `secret()` / `vault()`: their message is shown as is.
#[derive(Debug)]
struct VaultLookupError;

impl fmt::Display for VaultLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("vault lookup failed")
    }
}

impl std::error::Error for VaultLookupError {}

fn lookup_error(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message).with_source(VaultLookupError)
}

fn lookup(
    state: &State<'_, '_>,
    function: &str,
    path: &str,
    key: &str,
) -> Result<(Arc<Tracker>, Value), Error> {
    let tracker = state
        .lookup(TRACKER_VAR)
        .and_then(|value| value.downcast_object::<Tracker>())
        .ok_or_else(|| {
            lookup_error(format!(
                "{function}() is not available here (imported macros do not see the compile context)"
            ))
        })?;
    let Some(secret) = tracker.vault.paths.get(path) else {
        tracker
            .missing_paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_string());
        return Err(lookup_error(format!(
            "vault path `{path}` does not exist (reading key `{key}` with {function}())"
        )));
    };
    let value = match secret.data.get(key) {
        None => {
            return Err(lookup_error(format!(
                "vault path `{path}` has no key `{key}` (read with {function}())"
            )))
        }
        Some(serde_json::Value::Null) => {
            return Err(lookup_error(format!(
                "vault key `{key}` at `{path}` is null (read with {function}())"
            )))
        }
        Some(value) => value,
    };
    {
        let mut paths_read = tracker
            .paths_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !paths_read.contains(path) {
            paths_read.insert(path.to_string());
        }
    }
    let value = match value {
        serde_json::Value::String(text) => Value::from(text.as_str()),
        other => Value::from_serialize(other),
    };
    Ok((tracker, value))
}

/// `secret(path, key)`: a Vault value that makes the content using it sensitive.
fn secret(state: &State<'_, '_>, path: &str, key: &str) -> Result<Value, Error> {
    let (tracker, value) = lookup(state, "secret", path, key)?;
    tracker.secret_used.store(true, Ordering::Relaxed);
    // A secret is text: a number, list or map would be rendered as its template form (a
    // stray `{...}` in a token file), so it is refused, without quoting it.
    let Some(text) = value.as_str() else {
        return Err(lookup_error(format!(
            "vault key `{key}` at `{path}` is not a string (read with secret(), which takes text)"
        )));
    };
    if text.is_empty() {
        return Err(lookup_error(format!(
            "vault key `{key}` at `{path}` is empty (read with secret())"
        )));
    }
    tracker
        .secrets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Secret::new(text.to_string()));
    Ok(value)
}

/// `vault(path, key)`: non-secret Vault data.
fn vault(state: &State<'_, '_>, path: &str, key: &str) -> Result<Value, Error> {
    lookup(state, "vault", path, key).map(|(_, value)| value)
}

#[cfg(test)]
mod tests;
