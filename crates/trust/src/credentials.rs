use std::collections::BTreeMap;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::{Error, ErrorKind};

/// Registry credentials by host, read from the `dockerconfigjson` shape: `docker login`'s
/// `~/.docker/config.json` and the `.dockerconfigjson` key of a Kubernetes
/// `kubernetes.io/dockerconfigjson` Secret.
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, (String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hosts and users only: passwords never reach logs.
        f.debug_map()
            .entries(self.by_host.iter().map(|(h, (u, _))| (h, u)))
            .finish()
    }
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// No credentials: every registry is asked anonymously.
    pub fn none() -> Self {
        Credentials::default()
    }

    /// Adds (or replaces) the credentials for `host`.
    pub fn insert(&mut self, host: &str, username: &str, password: &str) {
        self.by_host.insert(
            normalize_host(host),
            (username.to_owned(), password.to_owned()),
        );
    }

    /// Reads a `dockerconfigjson` document; `source` names it in errors.
    pub fn from_docker_config(source: &str, json: &[u8]) -> Result<Self, Error> {
        let parsed: ConfigJson = serde_json::from_slice(json).map_err(|e| {
            Error::new(
                ErrorKind::BadKey,
                format!("{source}: not a docker config JSON document ({e}); it must look like {{\"auths\": {{\"HOST\": {{\"auth\": \"BASE64(user:password)\"}}}}}}"),
            )
        })?;
        let mut out = Credentials::default();
        for (host, entry) in parsed.auths {
            let pair = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| {
                            Error::new(
                                ErrorKind::BadKey,
                                format!(
                                    "{source}: auths.\"{host}\".auth is not base64 of user:password"
                                ),
                            )
                        })?;
                    let (u, p) = decoded.split_once(':').ok_or_else(|| {
                        Error::new(
                            ErrorKind::BadKey,
                            format!(
                                "{source}: auths.\"{host}\".auth decodes to no user:password pair"
                            ),
                        )
                    })?;
                    (u.to_owned(), p.to_owned())
                }
                (_, Some(u), Some(p)) => (u.clone(), p.clone()),
                // An entry without a secret (a credential helper's placeholder): anonymous.
                _ => continue,
            };
            out.by_host.insert(normalize_host(&host), pair);
        }
        Ok(out)
    }

    /// Merges `other` into these; `other` wins for a host both name.
    pub fn merge(&mut self, other: Credentials) {
        self.by_host.extend(other.by_host);
    }

    /// The credentials for `host`, or anonymous.
    pub fn for_host(&self, host: &str) -> RegistryAuth {
        match self.by_host.get(&normalize_host(host)) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The username and password for `host`, if any.
    pub fn basic(&self, host: &str) -> Option<(&str, &str)> {
        self.by_host
            .get(&normalize_host(host))
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// `https://index.docker.io/v1/` and `docker.io` are the same host to a docker config.
fn normalize_host(host: &str) -> String {
    let h = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or(h);
    match h {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_entries() {
        let json = br#"{"auths": {
            "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            "helper.example": {}
        }}"#;
        let c = Credentials::from_docker_config("config.json", json).unwrap();
        assert_eq!(c.basic("127.0.0.1:5000"), Some(("alice", "s3cret")));
        assert_eq!(c.basic("docker.io"), Some(("bob", "pw")));
        assert!(matches!(
            c.for_host("helper.example"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(c.for_host("other:1"), RegistryAuth::Anonymous));
    }

    #[test]
    fn bad_documents_name_the_source_and_the_entry() {
        let e = Credentials::from_docker_config("secret default/pull", b"[1]").unwrap_err();
        assert!(
            e.message
                .starts_with("secret default/pull: not a docker config"),
            "{e}"
        );
        let e = Credentials::from_docker_config("f", br#"{"auths": {"h:1": {"auth": "%%%"}}}"#)
            .unwrap_err();
        assert_eq!(
            e.message,
            "f: auths.\"h:1\".auth is not base64 of user:password"
        );
        let e = Credentials::from_docker_config(
            "f",
            br#"{"auths": {"h:1": {"auth": "bm9jb2xvbg=="}}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("no user:password pair"), "{e}");
    }
}
