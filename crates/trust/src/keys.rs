//! Cosign-format key pairs: an ECDSA P-256 private key encrypted with a password (the PEM
//! `cosign generate-key-pair` writes) and its public key.

use sigstore::cosign::verification_constraint::PublicKeyVerifier;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{SigStoreSigner, SigningScheme};

use crate::{Error, ErrorKind};

/// A new key pair: the private key PEM (encrypted with the password) and the public key PEM.
pub struct KeyPair {
    /// `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----`, readable by cosign.
    pub private_pem: String,
    /// `-----BEGIN PUBLIC KEY-----`.
    pub public_pem: String,
}

/// Makes an ECDSA P-256 key pair, the kind cosign makes.
pub fn generate(password: &[u8]) -> Result<KeyPair, Error> {
    let bad = |e: sigstore::errors::SigstoreError| {
        Error::new(ErrorKind::BadKey, format!("cannot make a key pair: {e}"))
    };
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .map_err(bad)?;
    let pair = signer.to_sigstore_keypair().map_err(bad)?;
    Ok(KeyPair {
        private_pem: pair
            .private_key_to_encrypted_pem(password)
            .map_err(bad)?
            .to_string(),
        public_pem: pair.public_key_to_pem().map_err(bad)?,
    })
}

/// Reads a private key (`source` names it in errors): encrypted with `password` (cosign's
/// format), or a plain PKCS#8 PEM when the password is empty. Only ECDSA P-256 keys sign.
pub fn signer(source: &str, pem: &[u8], password: &[u8]) -> Result<SigStoreSigner, Error> {
    let pair = SigStoreKeyPair::from_encrypted_pem(pem, password).map_err(|e| {
        Error::new(
            ErrorKind::BadKey,
            format!(
                "{source}: cannot read the private key ({e}); it must be a cosign key (`berth keygen` or `cosign generate-key-pair`) and COSIGN_PASSWORD its password"
            ),
        )
    })?;
    pair.to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
        .map_err(|e| {
            Error::new(
                ErrorKind::BadKey,
                format!("{source}: {pair} cannot sign here ({e}); use an ECDSA P-256 key (`berth keygen`)"),
            )
        })
}

/// Reads a public key PEM (`source` names it in errors).
pub fn verifier(source: &str, pem: &[u8]) -> Result<PublicKeyVerifier, Error> {
    PublicKeyVerifier::try_from(pem).map_err(|e| {
        Error::new(
            ErrorKind::BadKey,
            format!(
                "{source}: not a public key PEM ({e}); pass the .pub file `berth keygen` wrote"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_reads_back_and_the_wrong_password_is_named() {
        let pair = generate(b"pw").unwrap();
        assert!(pair.private_pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY"));
        assert!(pair.public_pem.contains("BEGIN PUBLIC KEY"));
        signer("k", pair.private_pem.as_bytes(), b"pw").unwrap();
        verifier("k.pub", pair.public_pem.as_bytes()).unwrap();
        let e = signer("berth.key", pair.private_pem.as_bytes(), b"wrong").unwrap_err();
        assert!(
            e.message
                .starts_with("berth.key: cannot read the private key"),
            "{e}"
        );
        let e = verifier(
            "x.pub",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap_err();
        assert!(e.message.starts_with("x.pub: not a public key PEM"), "{e}");
    }
}
