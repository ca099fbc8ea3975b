//! The one place that parses YAML (STYLE §14): text → a [`Node`] tree that keeps the 1-based
//! line and column of every node, so every later error can say `FILE:LINE`.
//!
//! Built on yaml-rust2's pull parser (its events carry markers). The tree is deliberately
//! small: a node is a scalar (its source text and whether it was plain), a sequence or a
//! mapping (entries in file order). Scalars are typed on demand with the YAML 1.2 **core
//! schema** ([`Scalar::resolve`]): plain `null`/`~`/empty, `true`/`false`, integers
//! (`12`, `-3`, `0o17`, `0x1f`), floats; anything quoted (or a block scalar, or tagged `!!str`)
//! is always a string. No YAML 1.1 surprises: `yes`, `no`, `on`, `off` are strings.
//!
//! Refused, each with a line, a column and a lowercase message:
//! - input over [`MAX_INPUT_BYTES`], raw control characters (other than tab and newlines);
//! - more than one document in a stream;
//! - duplicate keys in a mapping (compared by their text; the message names both lines), and
//!   keys that are not scalars;
//! - tags other than the core ones (`!!str`, `!!int`, `!!bool`, `!!null`, `!!float`, `!!seq`,
//!   `!!map`, and the non-specific `!`), and core tags on values of another type;
//! - nesting deeper than [`MAX_DEPTH`];
//! - documents with more than [`MAX_NODES`] nodes **after alias expansion**: an alias counts
//!   as the size of the node it refers to, and the budget is checked *before* the alias is
//!   expanded, so a "billion laughs" file is refused after a few kilobytes of work;
//! - integers outside the `i64` range, and recursive aliases.
//!
//! Anchors and aliases are otherwise allowed; aliases are expanded into copies (YAML 1.2 has
//! no merge key, so `<<` is an ordinary key).

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Largest YAML text accepted (4 MiB).
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;
/// Largest number of nodes in a document after alias expansion.
pub const MAX_NODES: usize = 200_000;
/// Deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 64;

const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// A YAML syntax or limit error, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {message}")]
pub struct YamlError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// Lowercase message, no trailing period.
    pub message: String,
}

impl YamlError {
    fn new(line: u32, col: u32, message: impl Into<String>) -> Self {
        YamlError {
            line,
            col,
            message: message.into(),
        }
    }
}

/// A node of the tree: where it starts and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line where the node starts (for a mapping: its first key or its `{`).
    pub line: u32,
    /// 1-based column where the node starts.
    pub col: u32,
    /// The node itself.
    pub value: NodeValue,
}

/// What a [`Node`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// A scalar; type it with [`Scalar::resolve`].
    Scalar(Scalar),
    /// A sequence, in order.
    Seq(Vec<Node>),
    /// A mapping, entries in file order; keys are scalars and unique by text.
    Map(Vec<(Node, Node)>),
}

/// A scalar as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The scalar's text after unescaping and folding (what the value *is*, not its quotes).
    pub text: String,
    /// True for any non-plain scalar (single- or double-quoted, `|` or `>` block) and for
    /// `!!str`/`!` tagged ones: such a scalar is always a string.
    pub quoted: bool,
}

/// A scalar typed by the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    /// `null`, `Null`, `NULL`, `~` or empty (plain).
    Null,
    /// `true`/`false` (also `True`, `TRUE`, ...; plain).
    Bool(bool),
    /// A plain integer (decimal, `0o` octal, `0x` hex).
    Int(i64),
    /// A plain float, including `.inf` and `.nan`.
    Float(f64),
    /// Anything else, and every quoted scalar.
    Str(&'a str),
}

impl Scalar {
    /// Types the scalar by the YAML 1.2 core schema.
    pub fn resolve(&self) -> Resolved<'_> {
        if self.quoted {
            return Resolved::Str(&self.text);
        }
        resolve_plain(&self.text)
    }
}

impl Node {
    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            NodeValue::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The typed scalar, if this is one.
    pub fn resolve(&self) -> Option<Resolved<'_>> {
        self.as_scalar().map(Scalar::resolve)
    }

    /// Whether this is a null scalar (`null`, `~` or nothing).
    pub fn is_null(&self) -> bool {
        matches!(self.resolve(), Some(Resolved::Null))
    }

    /// The text of a scalar that is not null (a string, or a number/boolean as written).
    pub fn scalar_text(&self) -> Option<&str> {
        match self.resolve()? {
            Resolved::Null => None,
            _ => self.as_scalar().map(|s| s.text.as_str()),
        }
    }

    /// The string, if this is a scalar that the core schema types as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self.resolve()? {
            Resolved::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a mapping entry whose key text is `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
            .map(|(_, v)| v)
    }

    /// What this node is, for messages: `a mapping`, `a list`, `a string`, `an integer`,
    /// `a boolean`, `a number` or `null`.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
            NodeValue::Scalar(s) => match s.resolve() {
                Resolved::Null => "null",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) => "an integer",
                Resolved::Float(_) => "a number",
                Resolved::Str(_) => "a string",
            },
        }
    }

    /// Converts to JSON with core-schema typing; mapping keys become their text.
    ///
    /// Fails only for floats that JSON cannot hold (`.inf`, `.nan`); the error names the line.
    pub fn to_json(&self) -> Result<serde_json::Value, YamlError> {
        use serde_json::Value;
        Ok(match &self.value {
            NodeValue::Scalar(s) => match s.resolve() {
                Resolved::Null => Value::Null,
                Resolved::Bool(b) => Value::Bool(b),
                Resolved::Int(i) => Value::from(i),
                Resolved::Float(f) => match serde_json::Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(YamlError::new(
                            self.line,
                            self.col,
                            "infinite or nan numbers are not supported; quote the value",
                        ))
                    }
                },
                Resolved::Str(s) => Value::String(s.to_owned()),
            },
            NodeValue::Seq(items) => {
                Value::Array(items.iter().map(Node::to_json).collect::<Result<_, _>>()?)
            }
            NodeValue::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.as_scalar().map(|s| s.text.clone()).unwrap_or_default();
                    map.insert(key, v.to_json()?);
                }
                Value::Object(map)
            }
        })
    }
}

impl fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolved::Null => f.write_str("null"),
            Resolved::Bool(b) => write!(f, "{b}"),
            Resolved::Int(i) => write!(f, "{i}"),
            Resolved::Float(x) => write!(f, "{x}"),
            Resolved::Str(s) => write!(f, "{s:?}"),
        }
    }
}

fn resolve_plain(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    match parse_core_int(text) {
        Some(Some(i)) => return Resolved::Int(i),
        // Out of range: refused at parse time, so a tree never holds one; stay total anyway.
        Some(None) => return Resolved::Str(text),
        None => {}
    }
    if let Some(f) = parse_core_float(text) {
        return Resolved::Float(f);
    }
    Resolved::Str(text)
}

/// `Some(Some(i))` for a core-schema integer, `Some(None)` for one out of the `i64` range,
/// `None` for anything else.
fn parse_core_int(text: &str) -> Option<Option<i64>> {
    if let Some(digits) = text.strip_prefix("0o") {
        if !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Some(i64::from_str_radix(digits, 8).ok());
        }
        return None;
    }
    if let Some(digits) = text.strip_prefix("0x") {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(i64::from_str_radix(digits, 16).ok());
        }
        return None;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    Some(unsigned.parse::<i64>().ok())
}

fn parse_core_float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let negative = text.starts_with('-');
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let bytes = unsigned.as_bytes();
    let mut i = 0;
    let int_digits = count_digits(&bytes[i..]);
    i += int_digits;
    let mut frac_digits = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = count_digits(&bytes[i..]);
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp_digits = count_digits(&bytes[i..]);
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != bytes.len() {
        return None;
    }
    let mut normalized = String::with_capacity(text.len() + 2);
    if negative {
        normalized.push('-');
    }
    if unsigned.starts_with('.') {
        normalized.push('0');
    }
    normalized.push_str(unsigned);
    normalized.parse::<f64>().ok()
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Parses one YAML document into a [`Node`] tree (see the module docs for what is refused).
///
/// An empty stream (nothing but comments) is a null scalar at line 1.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(YamlError::new(
            1,
            1,
            format!(
                "file is {} bytes, more than the limit of {MAX_INPUT_BYTES}; split it up",
                text.len()
            ),
        ));
    }
    check_characters(text)?;
    let end = end_of_text(text);
    Builder::new(text, end).run().map_err(|mut e| {
        (e.line, e.col) = clamp((e.line, e.col), end);
        e
    })
}

/// At the end of input the scanner reports the line after the last one; point at the end of
/// the last line instead.
fn clamp(position: (u32, u32), end: (u32, u32)) -> (u32, u32) {
    if position.0 > end.0 {
        end
    } else {
        position
    }
}

/// Line and column just past the last character.
fn end_of_text(text: &str) -> (u32, u32) {
    let tail = text.rsplit(['\n', '\r']).next().unwrap_or("");
    let col = u32::try_from(tail.chars().count())
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1);
    (last_line(text), col)
}

/// The number of the last line, counting line breaks as YAML does (`\n`, `\r\n`, lone `\r`).
fn last_line(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    u32::try_from(breaks).unwrap_or(u32::MAX).saturating_add(1)
}

fn check_characters(text: &str) -> Result<(), YamlError> {
    let (mut line, mut col) = (1u32, 1u32);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            col = 1;
            continue;
        }
        if c.is_control() && c != '\t' && c != '\r' {
            return Err(YamlError::new(
                line,
                col,
                format!(
                    "control character U+{:04X} is not allowed; remove it or write it as an escape in a double-quoted string",
                    c as u32
                ),
            ));
        }
        col += 1;
    }
    Ok(())
}

/// A collection under construction.
struct Frame {
    line: u32,
    col: u32,
    anchor: usize,
    /// Nodes (with alias expansion) inside this frame so far, itself included.
    size: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// Key text → line of its first occurrence.
        seen: HashMap<String, u32>,
    },
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    stack: Vec<Frame>,
    /// Anchor id → (copy of the anchored node, its expanded size).
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes in the document so far, alias expansions included.
    total_nodes: usize,
    /// Nodes copied into `anchors` so far.
    anchored_nodes: usize,
    /// Whether any alias was expanded yet (for the message when the budget runs out).
    expanded_aliases: bool,
    root: Option<(Node, usize)>,
    /// Line and column just past the end of the text.
    end: (u32, u32),
}

fn pos(mark: &Marker) -> (u32, u32) {
    let line = u32::try_from(mark.line()).unwrap_or(u32::MAX).max(1);
    let col = u32::try_from(mark.col()).unwrap_or(u32::MAX - 1) + 1;
    (line, col)
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, end: (u32, u32)) -> Self {
        Builder {
            end,
            parser: Parser::new_from_str(text),
            stack: Vec::new(),
            anchors: HashMap::new(),
            total_nodes: 0,
            anchored_nodes: 0,
            expanded_aliases: false,
            root: None,
        }
    }

    fn next(&mut self) -> Result<(Event, Marker), YamlError> {
        self.parser.next_token().map_err(|e| {
            let (line, col) = pos(e.marker());
            // The scanner quotes the offending character; a secret's first byte has no
            // business in a log line, so drop it.
            let message = if e.info().starts_with("unexpected character") {
                "unexpected character".to_owned()
            } else if e.info() == "recursion limit exceeded" {
                format!("nesting is deeper than {MAX_DEPTH} levels")
            } else {
                e.info().to_owned()
            };
            YamlError::new(line, col, message)
        })
    }

    fn run(mut self) -> Result<Node, YamlError> {
        let mut documents = 0usize;
        loop {
            let (event, mark) = self.next()?;
            let (line, col) = clamp(pos(&mark), self.end);
            match event {
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(YamlError::new(
                            line,
                            col,
                            "more than one document in one file; remove the second `---` or split the file",
                        ));
                    }
                }
                Event::Alias(id) => {
                    let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                        return Err(YamlError::new(
                            line,
                            col,
                            "alias refers to a node that contains it (recursive alias)",
                        ));
                    };
                    // Check the budget before copying anything.
                    self.expanded_aliases = true;
                    self.charge(size, line, col)?;
                    let mut node = self.anchors[&id].0.clone();
                    // The copy sits where the alias is written.
                    node.line = line;
                    node.col = col;
                    self.push_node(node, size)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    self.charge(1, line, col)?;
                    let quoted = style != TScalarStyle::Plain;
                    let scalar = scalar_with_tag(text, quoted, tag.as_ref(), line, col)?;
                    let node = Node {
                        line,
                        col,
                        value: NodeValue::Scalar(scalar),
                    };
                    self.register_anchor(anchor, &node, 1, line, col)?;
                    self.push_node(node, 1)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.open(line, col, anchor, tag.as_ref(), FrameKind::Seq(Vec::new()))?;
                }
                Event::MappingStart(anchor, tag) => {
                    let kind = FrameKind::Map {
                        entries: Vec::new(),
                        pending_key: None,
                        seen: HashMap::new(),
                    };
                    self.open(line, col, anchor, tag.as_ref(), kind)?;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let Some(frame) = self.stack.pop() else {
                        return Err(YamlError::new(line, col, "unbalanced collection end"));
                    };
                    let size = frame.size;
                    let anchor = frame.anchor;
                    let node = match frame.kind {
                        FrameKind::Seq(items) => Node {
                            line: frame.line,
                            col: frame.col,
                            value: NodeValue::Seq(items),
                        },
                        FrameKind::Map { entries, .. } => {
                            // A block mapping's start marker sits after its first key; report
                            // the mapping where it visibly starts.
                            let (mut l, mut c) = (frame.line, frame.col);
                            if let Some((k, _)) = entries.first() {
                                if (k.line, k.col) < (l, c) {
                                    (l, c) = (k.line, k.col);
                                }
                            }
                            Node {
                                line: l,
                                col: c,
                                value: NodeValue::Map(entries),
                            }
                        }
                    };
                    self.register_anchor(anchor, &node, size, line, col)?;
                    self.push_node(node, size)?;
                }
            }
        }
        Ok(match self.root.take() {
            Some((node, _)) => node,
            None => Node {
                line: 1,
                col: 1,
                value: NodeValue::Scalar(Scalar {
                    text: String::new(),
                    quoted: false,
                }),
            },
        })
    }

    fn charge(&mut self, size: usize, line: u32, col: u32) -> Result<(), YamlError> {
        self.total_nodes = self.total_nodes.saturating_add(size);
        if self.total_nodes > MAX_NODES {
            let message = if self.expanded_aliases {
                format!(
                    "document has more than {MAX_NODES} nodes after expanding aliases; is this an alias bomb?"
                )
            } else {
                format!("document has more than {MAX_NODES} nodes; split it up")
            };
            return Err(YamlError::new(line, col, message));
        }
        Ok(())
    }

    fn open(
        &mut self,
        line: u32,
        col: u32,
        anchor: usize,
        tag: Option<&Tag>,
        kind: FrameKind,
    ) -> Result<(), YamlError> {
        if let Some(tag) = tag {
            let want = match kind {
                FrameKind::Seq(_) => "seq",
                FrameKind::Map { .. } => "map",
            };
            let full = format!("{}{}", tag.handle, tag.suffix);
            match full.strip_prefix(CORE_TAG_PREFIX) {
                _ if full == "!" => {}
                Some(core) if core == want => {}
                Some(core @ ("str" | "int" | "bool" | "null" | "float" | "seq" | "map")) => {
                    return Err(YamlError::new(
                        line,
                        col,
                        format!("value does not match its tag !!{core}"),
                    ))
                }
                _ => return Err(unsupported_tag(&full, line, col)),
            }
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError::new(
                line,
                col,
                format!("nesting is deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.charge(1, line, col)?;
        self.stack.push(Frame {
            line,
            col,
            anchor,
            size: 1,
            kind,
        });
        Ok(())
    }

    fn register_anchor(
        &mut self,
        anchor: usize,
        node: &Node,
        size: usize,
        line: u32,
        col: u32,
    ) -> Result<(), YamlError> {
        if anchor == 0 {
            return Ok(());
        }
        // Nested anchors each keep a copy; bound the copies too.
        self.anchored_nodes = self.anchored_nodes.saturating_add(size);
        if self.anchored_nodes > MAX_NODES {
            return Err(YamlError::new(
                line,
                col,
                format!("anchored nodes total more than {MAX_NODES}; use fewer nested anchors"),
            ));
        }
        self.anchors.insert(anchor, (node.clone(), size));
        Ok(())
    }

    fn push_node(&mut self, node: Node, size: usize) -> Result<(), YamlError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some((node, size));
            return Ok(());
        };
        frame.size = frame.size.saturating_add(size);
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map {
                entries,
                pending_key,
                seen,
            } => match pending_key.take() {
                Some(key) => {
                    let mut node = node;
                    // An empty value's marker is the next token, often on a later line; it
                    // belongs to its key's line.
                    if node
                        .as_scalar()
                        .is_some_and(|s| s.text.is_empty() && !s.quoted)
                        && node.line > key.line
                    {
                        node.line = key.line;
                        node.col = key.col;
                    }
                    entries.push((key, node))
                }
                None => {
                    let Some(scalar) = node.as_scalar() else {
                        return Err(YamlError::new(
                            node.line,
                            node.col,
                            "mapping keys must be plain values, not lists or mappings",
                        ));
                    };
                    if let Some(first) = seen.get(&scalar.text) {
                        return Err(YamlError::new(
                            node.line,
                            node.col,
                            format!(
                                "duplicate key {:?} (first defined on line {first}); remove one of them",
                                scalar.text
                            ),
                        ));
                    }
                    seen.insert(scalar.text.clone(), node.line);
                    *pending_key = Some(node);
                }
            },
        }
        Ok(())
    }
}

fn unsupported_tag(full: &str, line: u32, col: u32) -> YamlError {
    let shown = match full.strip_prefix(CORE_TAG_PREFIX) {
        Some(suffix) => format!("!!{suffix}"),
        None => full.to_owned(),
    };
    YamlError::new(
        line,
        col,
        format!(
            "tag {shown:?} is not supported; only the core tags !!str, !!int, !!bool, !!null, !!float, !!seq and !!map are"
        ),
    )
}

fn scalar_with_tag(
    text: String,
    quoted: bool,
    tag: Option<&Tag>,
    line: u32,
    col: u32,
) -> Result<Scalar, YamlError> {
    let Some(tag) = tag else {
        if !quoted {
            if let Some(None) = parse_core_int(&text) {
                return Err(YamlError::new(
                    line,
                    col,
                    "integer is out of range (more than 64 bits); quote it if it is text",
                ));
            }
        }
        return Ok(Scalar { text, quoted });
    };
    let full = format!("{}{}", tag.handle, tag.suffix);
    if full == "!" {
        return Ok(Scalar { text, quoted: true });
    }
    let Some(core) = full.strip_prefix(CORE_TAG_PREFIX) else {
        return Err(unsupported_tag(&full, line, col));
    };
    let typed = resolve_plain(&text);
    let fits = match core {
        "str" => return Ok(Scalar { text, quoted: true }),
        "null" => matches!(typed, Resolved::Null),
        "bool" => matches!(typed, Resolved::Bool(_)),
        "int" => matches!(typed, Resolved::Int(_)),
        "float" => matches!(typed, Resolved::Int(_) | Resolved::Float(_)),
        "seq" | "map" => false,
        _ => return Err(unsupported_tag(&full, line, col)),
    };
    if !fits || parse_core_int(&text) == Some(None) {
        return Err(YamlError::new(
            line,
            col,
            format!("value does not match its tag !!{core}"),
        ));
    }
    Ok(Scalar {
        text,
        quoted: false,
    })
}

#[cfg(test)]
mod tests;
