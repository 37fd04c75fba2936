use std::sync::Arc;

use sha2::{Digest, Sha256};
use sigstore::cosign::signature_layers::SignatureLayer;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};

use crate::{Error, ErrorKind, keys};

/// A public key the platform trusts, with the name it is known by (its file or value key).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where it came from, e.g. `keys/release.pub`.
    pub name: String,
    /// The key, parsed once when the policy is made.
    pub(crate) verifier: SharedVerifier,
    /// `sha256:<hex>` of the PEM text: what audit records name.
    pub fingerprint: String,
}

/// A parsed public key shared by every verification that uses it.
#[derive(Debug, Clone)]
pub(crate) struct SharedVerifier(Arc<PublicKeyVerifier>);

impl VerificationConstraint for SharedVerifier {
    fn verify(&self, signature_layer: &SignatureLayer) -> sigstore::errors::Result<bool> {
        self.0.verify(signature_layer)
    }
}

impl TrustedKey {
    /// Reads a public key PEM; `name` names it in errors and verdicts.
    pub fn from_pem(name: &str, pem: &str) -> Result<Self, Error> {
        let verifier = SharedVerifier(Arc::new(keys::verifier(name, pem.as_bytes())?));
        Ok(TrustedKey {
            name: name.to_owned(),
            verifier,
            fingerprint: format!(
                "sha256:{}",
                hex::encode(Sha256::digest(pem.trim().as_bytes()))
            ),
        })
    }
}

/// What the platform (not the plugin) trusts: public keys, and which plugins must carry a
/// signature by one of them.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: Vec<TrustedKey>,
    require: Vec<String>,
}

impl Policy {
    /// `require` holds plugin names, `*`, or prefixes ending in `*`. Requiring signatures
    /// without any key is refused: nothing could pass.
    pub fn new(keys: Vec<TrustedKey>, require: Vec<String>) -> Result<Self, Error> {
        if keys.is_empty() && !require.is_empty() {
            return Err(Error::new(
                ErrorKind::BadKey,
                "signatures are required but no trusted key is given; pass the public key (`--require-signature KEY.pub`, or supplyChain.trustedKeys in the chart values)",
            ));
        }
        Ok(Policy { keys, require })
    }

    /// The keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The patterns of plugins that must be signed.
    pub fn required(&self) -> &[String] {
        &self.require
    }

    /// Whether `plugin` must be signed.
    pub fn requires(&self, plugin: &str) -> bool {
        self.require.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => plugin.starts_with(prefix),
            None => p == plugin,
        })
    }

    /// Whether any plugin must be signed.
    pub fn is_active(&self) -> bool {
        !self.require.is_empty()
    }

    /// Identifies the key set: a cached verdict holds for the same keys only.
    pub(crate) fn key_set(&self) -> String {
        let mut f: Vec<&str> = self.keys.iter().map(|k| k.fingerprint.as_str()).collect();
        f.sort_unstable();
        f.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_plugins_or_prefixes() {
        let pair = keys::generate(b"").unwrap();
        let key = TrustedKey::from_pem("k.pub", &pair.public_pem).unwrap();
        let p = Policy::new(vec![key], vec!["calculator".into(), "team-*".into()]).unwrap();
        assert!(p.requires("calculator"));
        assert!(p.requires("team-a"));
        assert!(!p.requires("hello"));
        let all = Policy::new(p.keys().to_vec(), vec!["*".into()]).unwrap();
        assert!(all.requires("hello"));
        assert!(!Policy::default().is_active());
    }

    #[test]
    fn requiring_without_keys_is_refused() {
        let e = Policy::new(vec![], vec!["*".into()]).unwrap_err();
        assert!(e.message.contains("no trusted key"), "{e}");
    }
}
