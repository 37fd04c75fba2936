use sigstore::cosign::constraint::{Constraint, PrivateKeySigner};
use sigstore::cosign::verification_constraint::VerificationConstraint;
use sigstore::cosign::{CosignCapabilities, SignatureLayer};
use sigstore::crypto::SigStoreSigner;
use sigstore::registry::OciReference;

use crate::verify::{cosign_client, sigstore_auth};
use crate::{Error, ErrorKind, Registry, Resolved};

/// Signs images in a registry: a cosign simple-signing payload over the manifest digest,
/// stored under the digest's `.sig` tag beside the image.
pub struct Signer {
    registry: Registry,
}

impl Signer {
    /// A signer that reaches registries through `registry`.
    pub fn new(registry: Registry) -> Self {
        Signer { registry }
    }

    /// Resolves `image` to its digest and signs that digest with `key`. Signatures other
    /// keys made for the same digest are kept; one this key made before is replaced.
    pub async fn sign(&self, image: &str, key: SigStoreSigner) -> Result<Resolved, Error> {
        let resolved = self.registry.resolve(image).await?;
        let host = resolved.registry.clone();
        let auth = sigstore_auth(&self.registry, &host);
        let image_ref: OciReference = format!("{}/{}", resolved.registry, resolved.repository)
            .parse()
            .map_err(|e| Error::new(ErrorKind::BadReference, format!("{image}: {e}")))?;
        let by_digest = OciReference::with_digest(
            resolved.registry.clone(),
            resolved.repository.clone(),
            resolved.digest.clone(),
        );
        let target = OciReference::with_tag(
            resolved.registry.clone(),
            resolved.repository.clone(),
            format!("{}.sig", resolved.digest.replace(':', "-")),
        );
        let own = key
            .to_sigstore_keypair()
            .and_then(|p| p.public_key_to_pem())
            .map_err(|e| Error::new(ErrorKind::BadKey, format!("the signing key: {e}")))?;
        let own = crate::keys::verifier("the signing key", own.as_bytes())?;
        let mut layer = SignatureLayer::new_unsigned(&image_ref, &resolved.digest)
            .map_err(|e| Error::new(ErrorKind::Registry, format!("{image}: {e}")))?;
        let signed = PrivateKeySigner::new_with_signer(key)
            .add_constraint(&mut layer)
            .map_err(|e| Error::new(ErrorKind::BadKey, format!("cannot sign {image}: {e}")))?;
        if !signed {
            return Err(Error::new(
                ErrorKind::BadKey,
                format!("cannot sign {image}: the signature layer was not signed"),
            ));
        }
        let mut client = cosign_client(&self.registry, &host)?;
        // Keep what others signed, when it can be stored again unchanged (the payload
        // re-serialises to the bytes its signature covers).
        let mut layers: Vec<SignatureLayer> = client
            .trusted_signature_layers(&auth, &by_digest)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !own.verify(l).unwrap_or(false))
            .filter(|l| {
                l.signature.is_some()
                    && serde_json::to_vec(&l.simple_signing).ok().as_deref()
                        == Some(l.raw_data.as_slice())
            })
            .collect();
        layers.push(layer);
        client
            .push_signature(None, &auth, &target, layers)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Registry,
                    format!("cannot store the signature of {image} at {target}: {e}"),
                )
            })?;
        Ok(resolved)
    }
}
