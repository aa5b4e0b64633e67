//! The app manifest, `dohost.toml`: an app's name, its optional worker (a stateless component in
//! front of its objects, reached through routes), its object classes, its vars and the outbound
//! destinations its guests may reach.
//!
//! ```toml
//! name = "chat"
//!
//! [worker]
//! component = "target/wasm32-wasip2/release/chat_worker.wasm"
//! routes = ["/", "example.com/api/"]
//!
//! [[objects]]
//! binding = "ROOMS"
//! namespace = "chat-rooms"
//! component = "target/wasm32-wasip2/release/chat_room.wasm"
//! public = false
//!
//! [vars]
//! ORIGIN_URL = "http://127.0.0.1:9000"
//!
//! [outbound]
//! allow = ["https://api.example.com", "http://127.0.0.1:9000"]
//! ```
//!
//! Everything is checked here, once, with errors naming the key (`objects[1].binding: ...`), so
//! that a deploy fails before any component is read. Unknown keys are errors: a misspelt key
//! would otherwise be a setting silently ignored. Pure apart from [`Manifest::load`]'s one read.

use crate::names;
use crate::outbound::{self, AllowList};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The longest binding or var name.
pub const MAX_NAME_BYTES: usize = 64;

/// The most vars an app may have: they are handed to every guest instance.
pub const MAX_VARS: usize = 64;

/// The longest var value.
pub const MAX_VAR_BYTES: usize = 4096;

/// A parsed and checked `dohost.toml`.
///
/// Serializable (as JSON, for the host's database) without the component paths: a path on the
/// deploying machine means nothing to the host, which keeps the components themselves. A
/// manifest read back from JSON has empty component paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The app's name; a valid namespace name ([`names::check_namespace`]).
    pub name: String,
    pub worker: Option<Worker>,
    /// In the order of the file.
    pub objects: Vec<ObjectClass>,
    /// Plain configuration handed to guests.
    pub vars: BTreeMap<String, String>,
    /// `[outbound] allow`: empty unless given, which refuses every outbound request.
    pub outbound: AllowList,
}

/// `[worker]`: the app's stateless front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    /// As written for [`Manifest::parse`]; joined to the manifest's folder by
    /// [`Manifest::load`]. Not serialized.
    #[serde(skip)]
    pub component: PathBuf,
    /// At least one, no two alike.
    pub routes: Vec<Route>,
}

/// One `[[objects]]` entry: a Durable Object class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClass {
    /// The name the app's guests reach the class by, through stubs: `[A-Z][A-Z0-9_]*`.
    pub binding: String,
    /// The namespace the class is deployed as.
    pub namespace: String,
    /// As for [`Worker::component`]. Not serialized.
    #[serde(skip)]
    pub component: PathBuf,
    /// Whether the class is also reachable over HTTP at `/{namespace}/{name}/`, not only
    /// through stubs.
    pub public: bool,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read ([`Manifest::load`] only).
    #[error("cannot read {}: {source}", .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML, has an unknown key or a bad value. `message` names the key
    /// (`objects[1].binding: ...`) or the line and column.
    #[error("{}{message}", in_file(.file.as_deref()))]
    Invalid {
        file: Option<PathBuf>,
        message: String,
    },
}

/// `path: `, before a message about a file, if known.
fn in_file(file: Option<&Path>) -> String {
    file.map(|file| format!("{}: ", file.display()))
        .unwrap_or_default()
}

fn invalid(message: String) -> ManifestError {
    ManifestError::Invalid {
        file: None,
        message,
    }
}

/// The file as TOML gives it, before any check: strings where [`Manifest`] has types, so that
/// each check can name its key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    worker: Option<RawWorker>,
    #[serde(default)]
    objects: Vec<RawObject>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    outbound: RawOutbound,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    component: String,
    #[serde(default)]
    routes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObject {
    binding: String,
    namespace: String,
    component: String,
    #[serde(default)]
    public: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    #[serde(default)]
    allow: Vec<String>,
}

impl Manifest {
    /// Parses and checks a manifest's text. Component paths are kept as written.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(toml_message(text, &e)))?;
        raw.check().map_err(invalid)
    }

    /// Reads, parses and checks the manifest at `path`, resolving component paths against the
    /// manifest's folder. Errors name the file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut manifest = Manifest::parse(&text).map_err(|error| match error {
            ManifestError::Invalid { message, .. } => ManifestError::Invalid {
                file: Some(path.to_owned()),
                message,
            },
            read => read,
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        if let Some(worker) = &mut manifest.worker {
            worker.component = folder.join(&worker.component);
        }
        for object in &mut manifest.objects {
            object.component = folder.join(&object.component);
        }
        Ok(manifest)
    }
}

/// A TOML error as one line: where, then what (serde's words name an unknown key and list the
/// known ones).
fn toml_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

impl RawManifest {
    /// Checks every value, section by section, and builds the manifest. The error is the
    /// first problem, with its key.
    fn check(self) -> Result<Manifest, String> {
        if names::check_namespace(&self.name).is_err() {
            return Err(format!(
                "name: `{}` is not a valid app name: like a namespace, it is 1 to 63 characters \
                 of a-z, 0-9 and '-'",
                shorten(&self.name)
            ));
        }
        if self.worker.is_none() && self.objects.is_empty() {
            return Err(
                "the app has neither a [worker] nor any [[objects]]: it needs at least one"
                    .to_owned(),
            );
        }
        let worker = self.worker.map(RawWorker::check).transpose()?;

        let mut objects: Vec<ObjectClass> = Vec::with_capacity(self.objects.len());
        for (i, raw) in self.objects.into_iter().enumerate() {
            let key = format!("objects[{i}]");
            check_binding(&raw.binding).map_err(|e| format!("{key}.binding: {e}"))?;
            if let Some(j) = objects.iter().position(|o| o.binding == raw.binding) {
                return Err(format!(
                    "{key}.binding: `{}` is already the binding of objects[{j}]",
                    raw.binding
                ));
            }
            if names::check_namespace(&raw.namespace).is_err() {
                return Err(format!(
                    "{key}.namespace: `{}` is not a valid namespace: 1 to 63 characters of a-z, \
                     0-9 and '-'",
                    shorten(&raw.namespace)
                ));
            }
            if let Some(j) = objects.iter().position(|o| o.namespace == raw.namespace) {
                return Err(format!(
                    "{key}.namespace: `{}` is already the namespace of objects[{j}]",
                    raw.namespace
                ));
            }
            objects.push(ObjectClass {
                binding: raw.binding,
                namespace: raw.namespace,
                component: check_component(raw.component)
                    .map_err(|e| format!("{key}.component: {e}"))?,
                public: raw.public,
            });
        }

        if self.vars.len() > MAX_VARS {
            return Err(format!(
                "vars: {} vars, more than the {MAX_VARS} allowed",
                self.vars.len()
            ));
        }
        let mut vars = BTreeMap::new();
        for (name, value) in self.vars {
            check_var_name(&name).map_err(|e| format!("vars: {e}"))?;
            // Guests see bindings and vars side by side (like a Worker's `env`).
            if let Some(j) = objects.iter().position(|o| o.binding == name) {
                return Err(format!(
                    "vars.{name}: `{name}` is already the binding of objects[{j}]"
                ));
            }
            let toml::Value::String(value) = value else {
                return Err(format!(
                    "vars.{name}: values are strings, not {}s; put it in quotes",
                    value.type_str()
                ));
            };
            if value.len() > MAX_VAR_BYTES {
                return Err(format!(
                    "vars.{name}: {} bytes, more than the {MAX_VAR_BYTES} allowed",
                    value.len()
                ));
            }
            vars.insert(name, value);
        }

        let rules = self
            .outbound
            .allow
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                rule.parse()
                    .map_err(|e| format!("outbound.allow[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?;

        Ok(Manifest {
            name: self.name,
            worker,
            objects,
            vars,
            outbound: AllowList::new(rules),
        })
    }
}

impl RawWorker {
    fn check(self) -> Result<Worker, String> {
        let component =
            check_component(self.component).map_err(|e| format!("worker.component: {e}"))?;
        if self.routes.is_empty() {
            return Err(
                "worker.routes: a worker needs at least one route, like routes = [\"/\"]"
                    .to_owned(),
            );
        }
        let mut routes: Vec<Route> = Vec::with_capacity(self.routes.len());
        for (i, text) in self.routes.iter().enumerate() {
            let route: Route = text
                .parse()
                .map_err(|e| format!("worker.routes[{i}]: {e}"))?;
            if let Some(j) = routes.iter().position(|r| r.same_as(&route)) {
                return Err(format!(
                    "worker.routes[{i}]: `{route}` is the same route as worker.routes[{j}]"
                ));
            }
            routes.push(route);
        }
        Ok(Worker { component, routes })
    }
}

fn check_component(path: String) -> Result<PathBuf, String> {
    if path.is_empty() {
        Err("the path to the component's .wasm file is empty".to_owned())
    } else {
        Ok(PathBuf::from(path))
    }
}

/// Checks the name of a variable or secret: a letter or `_`, then letters, digits or `_`.
pub fn check_var_name(name: &str) -> Result<(), String> {
    if is_identifier(name, |b| b.is_ascii_alphabetic() || b == b'_') {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name: a letter or _, then letters, digits or _, at most \
             {MAX_NAME_BYTES} characters",
            shorten(name)
        ))
    }
}

/// Checks a binding; when only its case (or a `-`) is wrong, says what it should be.
pub fn check_binding(binding: &str) -> Result<(), String> {
    let is_binding = |s: &str| is_identifier(s, |b| b.is_ascii_uppercase());
    if is_binding(binding) {
        return Ok(());
    }
    let fixed = binding.to_ascii_uppercase().replace('-', "_");
    if is_binding(&fixed) {
        Err(format!("`{binding}` must be upper case, like {fixed}"))
    } else {
        Err(format!(
            "`{}` is not a valid binding: a letter A-Z, then A-Z, 0-9 or _, at most \
             {MAX_NAME_BYTES} characters, like ROOMS",
            shorten(binding)
        ))
    }
}

/// `first` then `first` or digits or `_`; at most [`MAX_NAME_BYTES`]. For a binding, `first`
/// admits only upper case, so the rest is held to upper case too.
fn is_identifier(s: &str, first: impl Fn(u8) -> bool) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(&first)
        && bytes.all(|b| first(b) || b.is_ascii_digit() || b == b'_')
        && s.len() <= MAX_NAME_BYTES
}

/// At most 80 characters of something refused, for the message.
fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A worker route: a path prefix, optionally for one host only: `/api/`, `example.com/api/`.
///
/// A prefix matches whole path segments: `/api` and `/api/` both match `/api`, `/api/` and
/// `/api/x`, never `/apix`. The prefix is compared with the request path as sent (still
/// percent-encoded), the host with the Host header case-insensitively, ignoring its port and a
/// trailing dot. Serialized as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower case, without a trailing dot; `None` matches any host.
    host: Option<String>,
    /// Starts with `/`; printable ASCII without `?` or `#`.
    prefix: String,
}

impl Route {
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix without its trailing `/` (empty for `/`): what [`Route::matches`] compares.
    fn base(&self) -> &str {
        self.prefix.strip_suffix('/').unwrap_or(&self.prefix)
    }

    /// Whether two routes match the same requests (`/api` and `/api/` do).
    fn same_as(&self, other: &Route) -> bool {
        self.host == other.host && self.base() == other.base()
    }

    /// Whether the route matches a request (`host` is its Host header), and if so how long a
    /// match: the prefix's length without its trailing `/` (0 for `/`), so that `/api` and
    /// `/api/` rank alike (see [`best_match`]).
    pub fn matches(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if let Some(route_host) = &self.host
            && !host.is_some_and(|host| same_host(route_host, host))
        {
            return None;
        }
        let base = self.base();
        let rest = path.strip_prefix(base)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(base.len())
    }
}

/// Whether a Host header (perhaps with a port, a trailing dot, any case) names `route_host`.
fn same_host(route_host: &str, header: &str) -> bool {
    let name = match header.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => header,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case(route_host)
}

/// The best route for a request among `routes`, each with what it leads to (an app, say): the
/// longest match wins, then a route with a host over one without; on a full tie, the first.
pub fn best_match<'r, T>(
    routes: impl IntoIterator<Item = (&'r Route, T)>,
    host: Option<&str>,
    path: &str,
) -> Option<T> {
    let mut best: Option<((usize, bool), T)> = None;
    for (route, target) in routes {
        let Some(length) = route.matches(host, path) else {
            continue;
        };
        let rank = (length, route.host.is_some());
        if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
            best = Some((rank, target));
        }
    }
    best.map(|(_, target)| target)
}

impl FromStr for Route {
    type Err = ManifestError;

    /// Errors have no file and say the route: "`api`: a route is ...".
    fn from_str(s: &str) -> Result<Route, ManifestError> {
        parse_route(s).map_err(|reason| invalid(format!("`{}`: {reason}", shorten(s))))
    }
}

fn parse_route(s: &str) -> Result<Route, &'static str> {
    if s.contains("://") {
        return Err("a route has no scheme: write example.com/api/ or /api/");
    }
    let (host, prefix) = match s.find('/') {
        Some(0) => (None, s),
        Some(i) => (Some(&s[..i]), &s[i..]),
        None => {
            return Err(
                "a route is a path prefix starting with /, optionally after a host, like /api/ \
                 or example.com/api/",
            );
        }
    };
    let host = host.map(parse_route_host).transpose()?;
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Err(
            "a route's path is printable ASCII without spaces, ? or # (percent-encode anything \
             else)",
        );
    }
    Ok(Route {
        host,
        prefix: prefix.to_owned(),
    })
}

fn parse_route_host(host: &str) -> Result<String, &'static str> {
    if host.contains(':') {
        return Err("a route's host has no port: it matches the Host header whatever its port");
    }
    if let Ok(ip) = Ipv4Addr::from_str(host) {
        return Ok(ip.to_string());
    }
    outbound::host_name(host).ok_or("the host is neither a host name nor an IPv4 address")
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = &self.host {
            f.write_str(host)?;
        }
        f.write_str(&self.prefix)
    }
}

impl Serialize for Route {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Route, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "chat"

[worker]
component = "target/wasm32-wasip2/release/chat_worker.wasm"
routes = ["/", "/api/", "Example.com./api/"]

[[objects]]
binding = "ROOMS"
namespace = "chat-rooms"
component = "target/wasm32-wasip2/release/chat_room.wasm"

[[objects]]
binding = "USERS_2"
namespace = "chat-users"
component = "/abs/users.wasm"
public = true

[vars]
ORIGIN_URL = "http://127.0.0.1:9000"
_x = ""

[outbound]
allow = ["https://api.example.com", "http://127.0.0.1:9000", "https://*.example.org:8443"]
"#;

    fn error(text: &str) -> String {
        Manifest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn full_manifest() {
        let m = Manifest::parse(FULL).unwrap();
        assert_eq!(m.name, "chat");
        let worker = m.worker.as_ref().unwrap();
        assert_eq!(
            worker.component,
            Path::new("target/wasm32-wasip2/release/chat_worker.wasm")
        );
        let routes: Vec<String> = worker.routes.iter().map(|r| r.to_string()).collect();
        assert_eq!(routes, ["/", "/api/", "example.com/api/"]);
        assert_eq!(m.objects.len(), 2);
        assert_eq!(m.objects[0].binding, "ROOMS");
        assert_eq!(m.objects[0].namespace, "chat-rooms");
        assert!(!m.objects[0].public);
        assert!(m.objects[1].public);
        assert_eq!(m.vars["ORIGIN_URL"], "http://127.0.0.1:9000");
        assert_eq!(m.vars["_x"], "");
        assert_eq!(m.outbound.rules().len(), 3);
        assert_eq!(
            m.outbound.rules()[2].to_string(),
            "https://*.example.org:8443"
        );
    }

    #[test]
    fn minimal_manifests() {
        let m = Manifest::parse("name = \"a\"\n[worker]\ncomponent = \"w.wasm\"\nroutes = [\"/\"]")
            .unwrap();
        assert!(m.objects.is_empty() && m.vars.is_empty() && m.outbound.rules().is_empty());
        let m = Manifest::parse(
            "name = \"a\"\n[[objects]]\nbinding = \"A\"\nnamespace = \"a\"\ncomponent = \"a.wasm\"",
        )
        .unwrap();
        assert!(m.worker.is_none());
    }

    #[test]
    fn load_resolves_components() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dohost.toml");
        std::fs::write(&file, FULL).unwrap();
        let m = Manifest::load(&file).unwrap();
        assert_eq!(
            m.worker.unwrap().component,
            dir.path()
                .join("target/wasm32-wasip2/release/chat_worker.wasm")
        );
        assert_eq!(
            m.objects[0].component,
            dir.path()
                .join("target/wasm32-wasip2/release/chat_room.wasm")
        );
        assert_eq!(m.objects[1].component, Path::new("/abs/users.wasm"));

        std::fs::write(
            &file,
            "name = \"Chat\"\n[worker]\ncomponent = \"w\"\nroutes = [\"/\"]",
        )
        .unwrap();
        let message = Manifest::load(&file).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: name: `Chat`", file.display())),
            "{message}"
        );

        let missing = dir.path().join("missing.toml");
        let message = Manifest::load(&missing).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", missing.display())),
            "{message}"
        );
    }

    #[test]
    fn bad_manifests() {
        const W: &str = "[worker]\ncomponent = \"w.wasm\"\nroutes = [\"/\"]\n";
        const O: &str =
            "[[objects]]\nbinding = \"ROOMS\"\nnamespace = \"rooms\"\ncomponent = \"r\"\n";
        // (text, what the error says)
        let cases: Vec<(String, &str)> =
            vec![
            ("name = \"a\"\ncolour = 1\n".into(), "line 2, column 1: unknown field `colour`"),
            (format!("name = \"a\"\n{W}publik = true"), "unknown field `publik`"),
            (format!("name = \"a\"\n{O}publik = true"), "unknown field `publik`"),
            (format!("name = \"a\"\n{W}[outbound]\ndeny = []"), "unknown field `deny`"),
            (W.to_owned(), "missing field `name`"),
            ("name = \"a\"\n[worker]\nroutes = [\"/\"]".into(), "missing field `component`"),
            ("name = ".into(), "line 1"),
            ("name = \"a\"".into(), "the app has neither a [worker] nor any [[objects]]"),
            (format!("name = \"Chat\"\n{W}"), "name: `Chat` is not a valid app name"),
            (format!("name = \"\"\n{W}"), "name: `` is not a valid app name"),
            (
                "name = \"a\"\n[worker]\ncomponent = \"w\"".into(),
                "worker.routes: a worker needs at least one route",
            ),
            (
                "name = \"a\"\n[worker]\ncomponent = \"\"\nroutes = [\"/\"]".into(),
                "worker.component: the path to the component's .wasm file is empty",
            ),
            (
                "name = \"a\"\n[worker]\ncomponent = \"w\"\nroutes = [\"/\", \"api\"]".into(),
                "worker.routes[1]: `api`: a route is a path prefix starting with /",
            ),
            (
                "name = \"a\"\n[worker]\ncomponent = \"w\"\nroutes = [\"/api\", \"/x\", \"/api/\"]"
                    .into(),
                "worker.routes[2]: `/api/` is the same route as worker.routes[0]",
            ),
            (
                format!("name = \"a\"\n{O}{O}"),
                "objects[1].binding: `ROOMS` is already the binding of objects[0]",
            ),
            (
                format!("name = \"a\"\n{O}{}", O.replace("ROOMS", "OTHER")),
                "objects[1].namespace: `rooms` is already the namespace of objects[0]",
            ),
            (
                format!("name = \"a\"\n{W}{}", O.replace("ROOMS", "rooms")),
                "objects[0].binding: `rooms` must be upper case, like ROOMS",
            ),
            (
                format!("name = \"a\"\n{W}{}", O.replace("ROOMS", "chat-rooms")),
                "objects[0].binding: `chat-rooms` must be upper case, like CHAT_ROOMS",
            ),
            (
                format!("name = \"a\"\n{W}{}", O.replace("ROOMS", "1ROOMS")),
                "objects[0].binding: `1ROOMS` is not a valid binding",
            ),
            (
                format!("name = \"a\"\n{W}{}", O.replace("ROOMS", &"A".repeat(65))),
                "is not a valid binding",
            ),
            (
                format!("name = \"a\"\n{W}{}", O.replace("\"rooms\"", "\"Rooms\"")),
                "objects[0].namespace: `Rooms` is not a valid namespace",
            ),
            (
                format!("name = \"a\"\n{W}{}", O.replace("\"r\"", "\"\"")),
                "objects[0].component: the path",
            ),
            (
                format!("name = \"a\"\n{W}{O}[vars]\nPORT = 8080"),
                "vars.PORT: values are strings, not integers; put it in quotes",
            ),
            (
                format!("name = \"a\"\n{W}[vars]\n\"A-B\" = \"x\""),
                "vars: `A-B` is not a valid name",
            ),
            (
                format!("name = \"a\"\n{W}[vars]\n1A = \"x\""),
                "vars: `1A` is not a valid name",
            ),
            (
                format!("name = \"a\"\n{W}{O}[vars]\nROOMS = \"x\""),
                "vars.ROOMS: `ROOMS` is already the binding of objects[0]",
            ),
            (
                format!("name = \"a\"\n{W}[vars]\nA = \"{}\"", "x".repeat(4097)),
                "vars.A: 4097 bytes, more than the 4096 allowed",
            ),
            (
                format!(
                    "name = \"a\"\n{W}[vars]\n{}",
                    (0..65).map(|i| format!("V{i} = \"\"\n")).collect::<String>()
                ),
                "vars: 65 vars, more than the 64 allowed",
            ),
            (
                format!("name = \"a\"\n{W}[outbound]\nallow = [\"https://a.com\", \"ftp://x\"]"),
                "outbound.allow[1]: `ftp://x`: the scheme must be http or https",
            ),
        ];
        for (text, expected) in cases {
            let message = error(&text);
            assert!(
                message.contains(expected),
                "{text}\n=> {message}\n(expected {expected:?})"
            );
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let vars: String = (0..64).map(|i| format!("V{i} = \"\"\n")).collect();
        let text = format!(
            "name = \"a\"\n[[objects]]\nbinding = \"{}\"\nnamespace = \"{}\"\ncomponent = \"c\"\n\
             [vars]\n{vars}{} = \"{}\"",
            "A".repeat(64),
            "a".repeat(63),
            "B".repeat(64),
            "x".repeat(4096)
        );
        // 64 vars plus one more is too many; drop the first to stay at 64.
        assert!(error(&text).contains("vars: 65 vars"));
        let text = text.replacen("V0 = \"\"\n", "", 1);
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.vars.len(), 64);
    }

    #[test]
    fn json_without_paths() {
        let m = Manifest::parse(FULL).unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "chat",
                "worker": {"routes": ["/", "/api/", "example.com/api/"]},
                "objects": [
                    {"binding": "ROOMS", "namespace": "chat-rooms", "public": false},
                    {"binding": "USERS_2", "namespace": "chat-users", "public": true},
                ],
                "vars": {"ORIGIN_URL": "http://127.0.0.1:9000", "_x": ""},
                "outbound": [
                    "https://api.example.com",
                    "http://127.0.0.1:9000",
                    "https://*.example.org:8443",
                ],
            })
        );
        let back: Manifest = serde_json::from_value(json).unwrap();
        let mut expected = m;
        expected.worker.as_mut().unwrap().component = PathBuf::new();
        for object in &mut expected.objects {
            object.component = PathBuf::new();
        }
        assert_eq!(back, expected);
    }

    #[test]
    fn routes_parse_and_display() {
        // (written, host, prefix)
        let cases = [
            ("/", None, "/"),
            ("/api/", None, "/api/"),
            ("/api", None, "/api"),
            ("/a%20b/", None, "/a%20b/"),
            ("example.com/api/", Some("example.com"), "/api/"),
            ("EXAMPLE.com./", Some("example.com"), "/"),
            ("10.0.0.1/x", Some("10.0.0.1"), "/x"),
            ("api/", Some("api"), "/"),
        ];
        for (written, host, prefix) in cases {
            let route: Route = written.parse().unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!((route.host(), route.prefix()), (host, prefix), "{written}");
            assert_eq!(route.to_string().parse::<Route>().unwrap(), route);
        }
    }

    #[test]
    fn bad_routes() {
        let cases = [
            ("", "a route is a path prefix"),
            ("api", "a route is a path prefix"),
            ("https://example.com/", "no scheme"),
            ("example.com:8080/", "no port"),
            ("[::1]/", "no port"),
            ("exa mple.com/", "neither a host name"),
            ("*.example.com/", "neither a host name"),
            ("/a b", "printable ASCII"),
            ("/a?b", "printable ASCII"),
            ("/a#b", "printable ASCII"),
            ("/é", "printable ASCII"),
        ];
        for (written, reason) in cases {
            let message = written.parse::<Route>().unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("`{written}`: ")) && message.contains(reason),
                "{written}: {message}"
            );
        }
    }

    #[test]
    fn route_matching() {
        // (route, request host, path, match length)
        let cases: &[(&str, Option<&str>, &str, Option<usize>)] = &[
            ("/", None, "/", Some(0)),
            ("/", None, "/anything/at/all", Some(0)),
            ("/api/", None, "/api/x", Some(4)),
            ("/api/", None, "/api/", Some(4)),
            ("/api/", None, "/api", Some(4)),
            ("/api/", None, "/apix", None),
            ("/api/", None, "/ap", None),
            ("/api", None, "/api", Some(4)),
            ("/api", None, "/api/x", Some(4)),
            ("/api", None, "/apix", None),
            ("/api/v1", None, "/api/v1.json", None),
            ("/API/", None, "/api/x", None),
            ("/api/", Some("example.com"), "/api/x", Some(4)),
            ("example.com/api/", Some("example.com"), "/api/x", Some(4)),
            ("example.com/api/", Some("EXAMPLE.COM"), "/api/x", Some(4)),
            ("example.com/api/", Some("example.com."), "/api/x", Some(4)),
            (
                "example.com/api/",
                Some("example.com:8080"),
                "/api/x",
                Some(4),
            ),
            ("example.com/api/", Some("www.example.com"), "/api/x", None),
            ("example.com/api/", None, "/api/x", None),
            ("example.com/api/", Some("example.com"), "/other", None),
            ("10.0.0.1/", Some("10.0.0.1:80"), "/", Some(0)),
            ("10.0.0.1/", Some("[::1]:80"), "/", None),
        ];
        for &(route, host, path, length) in cases {
            let parsed: Route = route.parse().unwrap();
            assert_eq!(
                parsed.matches(host, path),
                length,
                "{route} {host:?} {path}"
            );
        }
    }

    #[test]
    fn best_route() {
        let routes: Vec<Route> = ["/", "/api/", "example.com/", "example.com/api", "/api/v1/"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let best = |host, path| best_match(routes.iter().map(|r| (r, r.to_string())), host, path);
        // (request host, path, winning route)
        let cases: &[(Option<&str>, &str, &str)] = &[
            (None, "/", "/"),
            (None, "/x", "/"),
            (None, "/api/x", "/api/"),
            (None, "/api/v1/x", "/api/v1/"),
            (None, "/api/v1", "/api/v1/"),
            (Some("example.com"), "/x", "example.com/"),
            (Some("other.com"), "/x", "/"),
            // Equal lengths (`/api/` ranks as `/api`): the route with a host wins.
            (Some("example.com"), "/api", "example.com/api"),
            (Some("example.com"), "/api/x", "example.com/api"),
            (Some("other.com"), "/api/x", "/api/"),
        ];
        for &(host, path, winner) in cases {
            assert_eq!(best(host, path).as_deref(), Some(winner), "{host:?} {path}");
        }
        let api: Vec<Route> = vec!["/api/".parse().unwrap()];
        assert_eq!(best_match(api.iter().map(|r| (r, ())), None, "/x"), None);
    }
}
