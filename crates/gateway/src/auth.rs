//! Bearer tokens, stored as SHA-256 digests, and their scopes.
//!
//! A tokens file (or `BERTH_TOKENS`) has one token per line (or per `;`):
//!
//! ```text
//! # name      digest                    scopes (comma-separated)
//! ci          sha256:9f86d08188…        invoke:*,hooks:*
//! dashboard   sha256:60303ae22b…        invoke:calculator
//! text-proc   sha256:fd61a03af4…        plugin:text-processor
//! ```
//!
//! Scopes: `invoke:*`, `invoke:PLUGIN`, `hooks:*`, `hooks:HOOK`, `admin` (everything), and
//! `plugin:NAME`, which makes the token that plugin's identity for inter-plugin calls.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::{Error, Result};

/// One thing a token allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything, including other plugins' details.
    Admin,
    /// Invoke every plugin.
    InvokeAll,
    /// Invoke one plugin.
    Invoke(String),
    /// Publish every hook.
    HooksAll,
    /// Publish one hook.
    Hook(String),
    /// Act as this plugin; inter-plugin calls are checked against its grants.
    Plugin(String),
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "admin" => Scope::Admin,
            "invoke:*" => Scope::InvokeAll,
            "hooks:*" => Scope::HooksAll,
            _ => match s.split_once(':') {
                Some(("invoke", p)) if !p.is_empty() => Scope::Invoke(p.to_owned()),
                Some(("hooks", h)) if !h.is_empty() => Scope::Hook(h.to_owned()),
                Some(("plugin", p)) if !p.is_empty() => Scope::Plugin(p.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown scope {s:?} (use admin, invoke:*, invoke:PLUGIN, hooks:*, hooks:HOOK or plugin:NAME)"
                    ));
                }
            },
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::InvokeAll => f.write_str("invoke:*"),
            Scope::Invoke(p) => write!(f, "invoke:{p}"),
            Scope::HooksAll => f.write_str("hooks:*"),
            Scope::Hook(h) => write!(f, "hooks:{h}"),
            Scope::Plugin(p) => write!(f, "plugin:{p}"),
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, or `plugin:NAME` for a plugin identity; sent as `Berth-Caller`.
    pub name: String,
    /// What the token allows.
    pub scopes: Vec<Scope>,
    /// Set when the caller is a plugin: its name.
    pub plugin: Option<String>,
    /// `name` as the `Berth-Caller` header value, made once.
    caller: HeaderValue,
}

/// `name` as a header value (`unknown` when it cannot be one).
fn caller_header(name: &str) -> HeaderValue {
    HeaderValue::try_from(name).unwrap_or(HeaderValue::from_static("unknown"))
}

impl Principal {
    /// A principal named `name` with `scopes`, acting as `plugin` when set.
    pub fn new(name: String, scopes: Vec<Scope>, plugin: Option<String>) -> Self {
        Self {
            caller: caller_header(&name),
            name,
            scopes,
            plugin,
        }
    }

    /// A principal acting as plugin `name`.
    pub fn for_plugin(name: &str) -> Self {
        Self::new(
            format!("plugin:{name}"),
            vec![Scope::Plugin(name.to_owned())],
            Some(name.to_owned()),
        )
    }

    /// The `Berth-Caller` header value plugins receive.
    pub fn caller(&self) -> &HeaderValue {
        &self.caller
    }

    /// True for `admin`.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// True when a scope allows invoking `plugin` (plugin identities are checked against
    /// grants instead).
    pub fn may_invoke(&self, plugin: &str) -> bool {
        self.scopes.iter().any(|s| match s {
            Scope::Admin | Scope::InvokeAll => true,
            Scope::Invoke(p) => p == plugin,
            _ => false,
        })
    }

    /// True when a scope allows publishing `hook`.
    pub fn may_publish(&self, hook: &str) -> bool {
        self.scopes.iter().any(|s| match s {
            Scope::Admin | Scope::HooksAll => true,
            Scope::Hook(h) => h == hook,
            _ => false,
        })
    }
}

/// Token digests and who they belong to.
#[derive(Clone, Debug, Default)]
pub struct TokenStore {
    by_digest: HashMap<[u8; 32], Arc<Principal>>,
}

impl TokenStore {
    /// An empty store: every token is refused (plugin tokens from the directory still work).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the tokens file format; `source` names the file in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut store = Self::new();
        store.extend_from(text, source)?;
        Ok(store)
    }

    /// Adds the tokens of `text` (tokens file format).
    pub fn extend_from(&mut self, text: &str, source: &str) -> Result<()> {
        for (i, raw) in text.split(['\n', ';']).enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: String| Error::Config(format!("{source}: entry {}: {why}", i + 1));
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, digest, scopes] = fields[..] else {
                return Err(bad("expected `NAME sha256:HEX SCOPE[,SCOPE…]`".into()));
            };
            let digest = parse_digest(digest).map_err(bad)?;
            let scopes = scopes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<Scope>, String>>()
                .map_err(bad)?;
            let plugins: Vec<&String> = scopes
                .iter()
                .filter_map(|s| match s {
                    Scope::Plugin(p) => Some(p),
                    _ => None,
                })
                .collect();
            if plugins.len() > 1 {
                return Err(bad("a token can be the identity of one plugin only".into()));
            }
            let principal = match plugins.first() {
                Some(plugin) => Principal::new(
                    format!("plugin:{plugin}"),
                    scopes.clone(),
                    Some((*plugin).clone()),
                ),
                None => Principal::new(name.to_owned(), scopes, None),
            };
            if self.by_digest.insert(digest, Arc::new(principal)).is_some() {
                return Err(bad("the same token appears twice".into()));
            }
        }
        Ok(())
    }

    /// Adds one token given in clear (for tests and tools); only its digest is kept.
    pub fn insert(&mut self, token: &str, name: &str, scopes: Vec<Scope>) {
        let plugin = scopes.iter().find_map(|s| match s {
            Scope::Plugin(p) => Some(p.clone()),
            _ => None,
        });
        let name = plugin
            .as_ref()
            .map_or_else(|| name.to_owned(), |p| format!("plugin:{p}"));
        self.by_digest.insert(
            digest(token),
            Arc::new(Principal::new(name, scopes, plugin)),
        );
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The principal of a token digest.
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<&Arc<Principal>> {
        self.by_digest.get(digest)
    }

    /// True when some token has the `admin` scope (the only one that may push a directory).
    pub fn has_admin(&self) -> bool {
        self.by_digest.values().any(|p| p.is_admin())
    }
}

use berth_contract::credential::{digest, parse_digest};

/// The bearer token of a request, if it has a well-formed `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Result<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Error::Unauthenticated(
            "missing Authorization: Bearer header",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Error::Unauthenticated("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthenticated(
            "the Authorization header must be `Bearer TOKEN`",
        ));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_contract::credential::digest_line;

    #[test]
    fn tokens_file_is_parsed_into_principals() {
        let text = format!(
            "# comment\nci {} invoke:*,hooks:*\n\nproc {} plugin:text-processor ; viewer {} invoke:calc",
            digest_line("a"),
            digest_line("b"),
            digest_line("c"),
        );
        let store = TokenStore::parse(&text, "tokens").unwrap();
        assert_eq!(store.len(), 3);
        let ci = store.lookup(&digest("a")).unwrap();
        assert!(ci.may_invoke("x") && ci.may_publish("before_command") && !ci.is_admin());
        let proc = store.lookup(&digest("b")).unwrap();
        assert_eq!(proc.plugin.as_deref(), Some("text-processor"));
        assert_eq!(proc.name, "plugin:text-processor");
        assert!(!proc.may_invoke("x"));
        let viewer = store.lookup(&digest("c")).unwrap();
        assert!(viewer.may_invoke("calc") && !viewer.may_invoke("other"));
        assert!(!viewer.may_publish("before_command"));
    }

    #[test]
    fn tokens_file_rejects_clear_tokens_and_unknown_scopes() {
        assert!(TokenStore::parse("ci secret invoke:*", "t").is_err());
        let line = format!("ci {} invoke", digest_line("a"));
        assert!(TokenStore::parse(&line, "t").is_err());
        let line = format!("ci {} plugin:a,plugin:b", digest_line("a"));
        assert!(TokenStore::parse(&line, "t").is_err());
    }

    #[test]
    fn bearer_header_is_required() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc");
    }
}
