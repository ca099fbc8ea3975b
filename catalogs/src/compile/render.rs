//! Rendering one compiled resource template into catalog resources: `for_each`, `when`, field
//! defaults, path and URL checks, and the secret rules (a secret may only reach file content,
//! and content that read one is sensitive).

use std::borrow::Cow;
use std::collections::BTreeMap;

use minijinja::context;
use minijinja::value::{Value, ValueKind};
use steward_protocol::{
    DirectoryReplace, DirectorySpec, ExecSpec, FileContent, FileSpec, GitCloneSpec, GroupSpec,
    Mode, PackageSpec, Replace, Resource, ResourceId, ResourceSpec, Restart, Secret, ServiceSpec,
    ServiceState, SwapSpec, SymlinkReplace, SymlinkSpec,
};

use super::prepare::{is_normal_path, path_message, Field, FieldValue, Kind, PreparedResource};
use crate::model::{Loc, SiteError};
use crate::template::{
    ExprTemplate, RenderContext, StrTemplate, TemplateError, Templates, Tracker,
};

/// What resources are rendered with.
pub(super) struct Renderer<'a> {
    pub templates: &'a Templates,
    pub files: &'a BTreeMap<String, String>,
    pub tracker: &'a Tracker,
}

/// Where a bundle is rendered: its context and, for user bundles, the user (name and
/// `user:<name>` id).
pub(super) struct Scope<'a> {
    pub ctx: &'a Value,
    pub user: Option<(&'a str, &'a ResourceId)>,
    /// The user's home, in a user bundle.
    pub home: Option<&'a str>,
}

impl Scope<'_> {
    fn user_name(&self) -> Option<&str> {
        self.user.map(|(name, _)| name)
    }

    /// Whether `path` is inside the user's home (not the home itself), in a user bundle.
    fn in_home(&self, path: &str) -> bool {
        self.home.is_some_and(|home| {
            path.strip_prefix(home)
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
        })
    }
}

/// A rendered resource and the template it came from (borrowed from the compiler: no
/// allocation per resource).
#[derive(Debug)]
pub(super) struct Emitted<'a> {
    pub resource: Resource,
    pub loc: Cow<'a, Loc>,
}

impl<'a> Renderer<'a> {
    /// Renders `template` in `scope`, appending one resource per `for_each` item that passes
    /// `when`. User-bundle resources require their user.
    pub fn render(
        &self,
        template: &'a PreparedResource,
        scope: &Scope<'_>,
        out: &mut Vec<Emitted<'a>>,
    ) -> Result<(), SiteError> {
        let Some(for_each) = &template.for_each else {
            return self.render_one(template, scope.ctx, scope, out);
        };
        let items = self.eval(template, "for_each", for_each, scope.ctx, scope)?;
        if !matches!(
            items.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        ) {
            return Err(SiteError::new(
                template.loc.clone(),
                template.field("for_each"),
                format!("must yield a list, not {}{}", items.kind(), label(scope)),
            ));
        }
        let items = items.try_iter().map_err(|err| {
            SiteError::new(
                template.loc.clone(),
                template.field("for_each"),
                format!("{err}{}", label(scope)),
            )
        })?;
        for item in items {
            let ctx = match RenderContext::of(scope.ctx) {
                Some(base) => RenderContext {
                    item: Some(item),
                    ..base.clone()
                }
                .into_value(),
                None => context! { item => item, ..scope.ctx.clone() },
            };
            self.render_one(template, &ctx, scope, out)?;
        }
        Ok(())
    }

    fn eval(
        &self,
        template: &PreparedResource,
        name: &str,
        expr: &ExprTemplate,
        ctx: &Value,
        scope: &Scope<'_>,
    ) -> Result<Value, SiteError> {
        self.tracker.reset();
        let value = self
            .templates
            .eval(expr, ctx)
            .map_err(|err| template_error(template, name, template.loc.line, err, false, scope))?;
        if self.tracker.secret_used() {
            return Err(secret_refused(
                template.loc.clone(),
                template.field(name),
                scope,
            ));
        }
        Ok(value)
    }

    fn render_one(
        &self,
        template: &'a PreparedResource,
        ctx: &Value,
        scope: &Scope<'_>,
        out: &mut Vec<Emitted<'a>>,
    ) -> Result<(), SiteError> {
        if let Some(when) = &template.when {
            if !self.eval(template, "when", when, ctx, scope)?.is_true() {
                return Ok(());
            }
        }
        let fields = Fields {
            renderer: self,
            template,
            ctx,
            scope,
        };
        let spec = fields.spec()?;
        // The rules the agent applies again (unit names, git names, modes), here with the
        // template's line, so a catalog the agent would refuse never leaves the server.
        steward_protocol::rules::check_spec(&spec)
            .map_err(|broken| fields.error(broken.field, broken.message))?;
        let mut resource = resource(spec);
        if let Some((_, user_id)) = scope.user {
            resource.requires.push(user_id.clone());
        }
        for id in &template.requires {
            let id = fields.plain(id, "requires", template.loc.line)?;
            resource = resource.requiring(ResourceId(id));
        }
        out.push(Emitted {
            resource,
            loc: Cow::Borrowed(&template.loc),
        });
        Ok(())
    }
}

/// A resource with its id (`kind:name`), built without the formatting machinery.
pub(super) fn resource(spec: ResourceSpec) -> Resource {
    let (kind, name) = (spec.kind(), spec.name());
    let mut id = String::with_capacity(kind.len() + 1 + name.len());
    id.push_str(kind);
    id.push(':');
    id.push_str(name);
    Resource {
        id: ResourceId(id),
        requires: Vec::new(),
        spec,
    }
}

/// ` for user `emo``, appended to messages of user-bundle errors.
fn label(scope: &Scope<'_>) -> String {
    scope
        .user_name()
        .map(|user| format!(" (for user `{user}`)"))
        .unwrap_or_default()
}

fn secret_refused(loc: Loc, field: String, scope: &Scope<'_>) -> SiteError {
    SiteError::new(
        loc,
        field,
        format!(
            "secret() may only be used in file content (`template` or `content`); use vault() for data that is not secret{}",
            label(scope)
        ),
    )
}

/// A render error as a site error: in a site file, at that file's line (naming the field that
/// used it); in the field itself, at the field's line.
fn template_error(
    template: &PreparedResource,
    name: &str,
    line: u32,
    err: TemplateError,
    multiline: bool,
    scope: &Scope<'_>,
) -> SiteError {
    match err.file {
        Some(file) => SiteError::new(
            Loc::new(format!("files/{file}"), err.line),
            "",
            format!(
                "{}{} (used by {}:{} {})",
                err.message,
                label(scope),
                template.loc.file,
                line,
                template.field(name)
            ),
        ),
        None => {
            let mut message = err.message;
            if multiline && err.line > 0 {
                message.push_str(&format!(" (template line {})", err.line));
            }
            message.push_str(&label(scope));
            SiteError::new(
                Loc::new(template.loc.file.clone(), line),
                template.field(name),
                message,
            )
        }
    }
}

/// The fields of one resource being rendered in one context.
struct Fields<'a> {
    renderer: &'a Renderer<'a>,
    template: &'a PreparedResource,
    ctx: &'a Value,
    scope: &'a Scope<'a>,
}

impl Fields<'_> {
    /// Only templates rendered more than once per compile are worth memoizing.
    fn memoize(&self) -> bool {
        self.scope.user.is_some() || self.template.for_each.is_some()
    }

    fn error(&self, name: &str, message: impl Into<String>) -> SiteError {
        let mut message = message.into();
        message.push_str(&label(self.scope));
        SiteError::new(
            self.template.loc_of(name),
            self.template.field(name),
            message,
        )
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.template.fields.get(name)
    }

    /// Renders a string that is not file content: `secret()` is refused.
    fn plain(&self, template: &StrTemplate, name: &str, line: u32) -> Result<String, SiteError> {
        if let Some(text) = template.as_literal() {
            return Ok(text.to_string());
        }
        let tracker = self.renderer.tracker;
        tracker.reset();
        let text = self
            .renderer
            .templates
            .render(template, self.ctx)
            .map_err(|err| {
                template_error(
                    self.template,
                    name,
                    line,
                    err,
                    template.is_multiline(),
                    self.scope,
                )
            })?;
        if tracker.secret_used() {
            return Err(secret_refused(
                Loc::new(self.template.loc.file.clone(), line),
                self.template.field(name),
                self.scope,
            ));
        }
        Ok(text)
    }

    fn str(&self, name: &str) -> Result<Option<String>, SiteError> {
        match self.field(name) {
            None => Ok(None),
            Some(Field {
                line,
                value: FieldValue::Str(template),
            }) => self.plain(template, name, *line).map(Some),
            Some(_) => Err(self.error(name, "expected a string")),
        }
    }

    fn required(&self, name: &str) -> Result<String, SiteError> {
        self.str(name)?
            .ok_or_else(|| self.error(name, "missing required field"))
    }

    fn path(&self, name: &str) -> Result<Option<String>, SiteError> {
        let path = self.str(name)?;
        match path {
            Some(path) if !is_normal_path(&path) => Err(self.error(name, path_message(&path))),
            other => Ok(other),
        }
    }

    fn required_path(&self, name: &str) -> Result<String, SiteError> {
        self.path(name)?
            .ok_or_else(|| self.error(name, "missing required field"))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, SiteError> {
        match self.field(name) {
            None => Ok(None),
            Some(Field {
                value: FieldValue::Int(int),
                ..
            }) => Ok(Some(*int)),
            Some(Field {
                line,
                value: FieldValue::Templated(template),
            }) => {
                let text = self.plain(template, name, *line)?;
                text.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| self.error(name, format!("expected an integer, got `{text}`")))
            }
            Some(_) => Err(self.error(name, "expected an integer")),
        }
    }

    fn int_in<T: TryFrom<i64>>(&self, name: &str, what: &str) -> Result<Option<T>, SiteError> {
        match self.int(name)? {
            None => Ok(None),
            Some(int) => T::try_from(int)
                .map(Some)
                .map_err(|_| self.error(name, format!("{int} is out of range for {what}"))),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, SiteError> {
        match self.field(name) {
            None => Ok(None),
            Some(Field {
                value: FieldValue::Bool(flag),
                ..
            }) => Ok(Some(*flag)),
            Some(Field {
                line,
                value: FieldValue::Templated(template),
            }) => {
                let text = self.plain(template, name, *line)?;
                match text.trim() {
                    "true" | "True" => Ok(Some(true)),
                    "false" | "False" => Ok(Some(false)),
                    other => {
                        Err(self.error(name, format!("expected true or false, got `{other}`")))
                    }
                }
            }
            Some(_) => Err(self.error(name, "expected true or false")),
        }
    }

    fn list(&self, name: &str) -> Result<Option<Vec<String>>, SiteError> {
        match self.field(name) {
            None => Ok(None),
            Some(Field {
                line,
                value: FieldValue::List(items),
            }) => items
                .iter()
                .map(|item| self.plain(item, name, *line))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(self.error(name, "expected a list of strings")),
        }
    }

    fn map(&self, name: &str) -> Result<BTreeMap<String, String>, SiteError> {
        match self.field(name) {
            None => Ok(BTreeMap::new()),
            Some(Field {
                line,
                value: FieldValue::Map(entries),
            }) => entries
                .iter()
                .map(|(key, value)| Ok((key.clone(), self.plain(value, name, *line)?)))
                .collect(),
            Some(_) => Err(self.error(name, "expected a map of strings")),
        }
    }

    fn mode(&self, default: u32) -> Result<Mode, SiteError> {
        match self.str("mode")? {
            None => Ok(Mode(default)),
            Some(text) => Mode::parse(&text).ok_or_else(|| {
                self.error(
                    "mode",
                    format!("invalid mode `{text}`: expected octal such as \"0644\""),
                )
            }),
        }
    }

    /// `restart:` of a service: `immediately` (default) or `when_idle`, whose user is `user:`
    /// or the instance of a template unit (`t3-serve@emo.service` → `emo`), and whose optional
    /// `max_defer` is a duration (`8h`).
    fn restart(&self, unit: &str) -> Result<Restart, SiteError> {
        let user = self.str("user")?;
        let max_defer = self.str("max_defer")?;
        match self.str("restart")?.as_deref() {
            None | Some("immediately") => {
                if let Some(field) = [("user", &user), ("max_defer", &max_defer)]
                    .into_iter()
                    .find_map(|(name, value)| value.as_ref().map(|_| name))
                {
                    return Err(self.error(
                        field,
                        format!("`{field}` only applies to `restart: when_idle`"),
                    ));
                }
                Ok(Restart::Immediately)
            }
            Some("when_idle") => {
                let user = match user.or_else(|| unit_instance(unit).map(str::to_string)) {
                    Some(user) if crate::site::is_linux_name(&user) => user,
                    Some(user) => {
                        return Err(self.error(
                            "user",
                            format!("`{user}` is not a user name; `when_idle` needs whose activity gates the restart"),
                        ))
                    }
                    None => {
                        return Err(self.error(
                            "user",
                            format!(
                                "`{unit}` is not a template instance (name@user.service); give `user:` for `restart: when_idle`"
                            ),
                        ))
                    }
                };
                let max_defer_secs = match max_defer {
                    None => None,
                    Some(text) => Some(
                        crate::site::parse_duration(&text)
                            .and_then(|secs| u64::try_from(secs).ok())
                            .ok_or_else(|| {
                                self.error(
                                    "max_defer",
                                    format!("`{text}` is not a duration; write a number and a unit: 90s, 30m, 12h or 7d"),
                                )
                            })?,
                    ),
                };
                Ok(Restart::WhenIdle {
                    user,
                    max_defer_secs,
                })
            }
            Some(other) => Err(self.error(
                "restart",
                format!("expected immediately or when_idle, got `{other}`"),
            )),
        }
    }

    fn owner(&self, name: &str) -> Result<String, SiteError> {
        Ok(self
            .str(name)?
            .unwrap_or_else(|| self.scope.user_name().unwrap_or("root").to_string()))
    }

    fn url(&self, name: &str, url: String) -> Result<String, SiteError> {
        crate::site::check_clone_url(&url)
            .map(|()| url)
            .map_err(|problem| self.error(name, problem))
    }

    /// File content: rendered from `template` or `content`, or `source` verbatim. Content that
    /// called `secret()`, or any content with `sensitive: true`, is [`FileContent::Secret`].
    fn content(&self) -> Result<FileContent, SiteError> {
        let tracker = self.renderer.tracker;
        let sensitive = self.bool("sensitive")?.unwrap_or(false);
        let (text, read_secret) = if let Some(name) = self.str("template")? {
            let line = self
                .field("template")
                .map_or(self.template.loc.line, |f| f.line);
            self.renderer
                .templates
                .render_file(&name, self.ctx, tracker, self.memoize())
                .map_err(|err| {
                    template_error(self.template, "template", line, err, false, self.scope)
                })?
        } else if let Some(name) = self.str("source")? {
            let text = self.renderer.files.get(&name).ok_or_else(|| {
                self.error("source", format!("no file `files/{name}` in the site"))
            })?;
            (text.clone(), false)
        } else if let Some(Field {
            line,
            value: FieldValue::Str(template),
        }) = self.field("content")
        {
            self.renderer
                .templates
                .render_memoized(template, self.ctx, tracker, self.memoize())
                .map_err(|err| {
                    template_error(
                        self.template,
                        "content",
                        *line,
                        err,
                        template.is_multiline(),
                        self.scope,
                    )
                })?
        } else {
            return Err(self.error(
                "content",
                "a file takes one of `template`, `source` or `content`",
            ));
        };
        Ok(if sensitive || read_secret {
            FileContent::Secret(Secret::new(text))
        } else {
            FileContent::Text(text)
        })
    }

    fn spec(&self) -> Result<ResourceSpec, SiteError> {
        Ok(match self.template.kind {
            Kind::Package => ResourceSpec::Package(PackageSpec {
                name: self.required("name")?,
            }),
            Kind::Group => ResourceSpec::Group(GroupSpec {
                name: self.required("name")?,
                gid: self.int_in("gid", "a gid")?,
                system: self.bool("system")?.unwrap_or(false),
            }),
            Kind::File => {
                let replace = match self.str("replace")?.as_deref() {
                    None | Some("always") => Replace::Always,
                    Some("if_absent") => Replace::IfAbsent,
                    Some("if_marked") => Replace::IfMarked {
                        marker: self.required("marker")?,
                    },
                    Some("if_stale") => {
                        let marker = self.required("marker")?;
                        let current = self.required("current")?;
                        if marker.is_empty() || !current.contains(&marker) {
                            return Err(self.error(
                                "current",
                                "replace: if_stale needs a non-empty `marker` that `current` contains \
                                 (every variant carries the marker; only this one carries `current`)",
                            ));
                        }
                        Replace::IfStale { marker, current }
                    }
                    Some(other) => {
                        return Err(self.error(
                            "replace",
                            format!(
                                "expected always, if_absent, if_marked or if_stale, got `{other}`"
                            ),
                        ))
                    }
                };
                ResourceSpec::File(FileSpec {
                    path: self.required_path("path")?,
                    owner: self.owner("owner")?,
                    group: self.owner("group")?,
                    mode: self.mode(0o644)?,
                    content: self.content()?,
                    replace,
                    backup: self.bool("backup")?.unwrap_or(false),
                })
            }
            Kind::Directory => {
                let path = self.required_path("path")?;
                let replace = match self.str("replace")?.as_deref() {
                    Some("always") => DirectoryReplace::Always,
                    Some("if_absent") => DirectoryReplace::IfAbsent,
                    // What is already in someone's home is theirs (issue: "don't break emo").
                    None if self.scope.in_home(&path) => DirectoryReplace::IfAbsent,
                    None => DirectoryReplace::Always,
                    Some(other) => {
                        return Err(self.error(
                            "replace",
                            format!("expected always or if_absent, got `{other}`"),
                        ))
                    }
                };
                ResourceSpec::Directory(DirectorySpec {
                    path,
                    owner: self.owner("owner")?,
                    group: self.owner("group")?,
                    mode: self.mode(0o755)?,
                    replace,
                })
            }
            Kind::Symlink => ResourceSpec::Symlink(SymlinkSpec {
                path: self.required_path("path")?,
                target: self.required_path("target")?,
                owner: self.owner("owner")?,
                group: self.owner("group")?,
                replace: match self.str("replace")?.as_deref() {
                    None | Some("if_absent") => SymlinkReplace::IfAbsent,
                    Some("always") => SymlinkReplace::Always,
                    Some(other) => {
                        return Err(self.error(
                            "replace",
                            format!("expected if_absent or always, got `{other}`"),
                        ))
                    }
                },
            }),
            Kind::Service => {
                let name = self.required("name")?;
                let restart = self.restart(&name)?;
                ResourceSpec::Service(ServiceSpec {
                    name,
                    enable: self.bool("enable")?.unwrap_or(true),
                    ensure: match self.str("ensure")?.as_deref() {
                        None | Some("running") => ServiceState::Running,
                        Some("stopped") => ServiceState::Stopped,
                        Some(other) => {
                            return Err(self.error(
                                "ensure",
                                format!("expected running or stopped, got `{other}`"),
                            ))
                        }
                    },
                    subscribes: self
                        .list("subscribes")?
                        .unwrap_or_default()
                        .into_iter()
                        .map(ResourceId)
                        .collect(),
                    restart,
                })
            }
            Kind::GitClone => {
                let url = self.required("url")?;
                let mut remotes = self.map("remotes")?;
                for url in remotes.values_mut() {
                    *url = self.url("remotes", std::mem::take(url))?;
                }
                ResourceSpec::GitClone(GitCloneSpec {
                    path: self.required_path("path")?,
                    url: self.url("url", url)?,
                    user: self.owner("user")?,
                    branch: self.str("branch")?,
                    config: self.map("config")?,
                    remotes,
                    refresh: self.bool("refresh")?.unwrap_or(false),
                    migrate_from: self.path("migrate_from")?,
                })
            }
            Kind::Swap => ResourceSpec::Swap(SwapSpec {
                path: self.required_path("path")?,
                size_mib: self
                    .int_in::<u64>("size_mib", "a size in MiB")?
                    .filter(|size| *size > 0)
                    .ok_or_else(|| self.error("size_mib", "expected a positive size in MiB"))?,
            }),
            Kind::Exec => {
                let command = self.list("command")?.unwrap_or_default();
                if command.is_empty() {
                    return Err(self.error("command", "expected a non-empty argv list"));
                }
                ResourceSpec::Exec(ExecSpec {
                    name: self.required("name")?,
                    command,
                    user: self.str("user")?,
                    cwd: self.path("cwd")?,
                    creates: self.path("creates")?,
                    unless: self.list("unless")?,
                    timeout_secs: self
                        .int_in("timeout_secs", "a timeout in seconds")?
                        .unwrap_or(300),
                    env: self.map("env")?,
                })
            }
        })
    }
}

/// The instance of a template unit: `t3-serve@emo.service` → `emo`.
fn unit_instance(unit: &str) -> Option<&str> {
    let (_, rest) = unit.split_once('@')?;
    let (instance, _) = rest.rsplit_once('.')?;
    (!instance.is_empty()).then_some(instance)
}
