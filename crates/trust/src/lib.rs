//! Berth's supply chain: which bytes run and who published them.
//!
//! - [`Registry`] reaches OCI registries with credentials in the `dockerconfigjson` shape
//!   (what `docker login` writes and what Kubernetes `imagePullSecrets` hold), resolves a
//!   tag to the digest it points to now, and reads an image's config labels.
//! - [`keys`] makes and reads cosign-format key pairs; [`Signer`] signs an image by digest
//!   and stores the signature where cosign does (the `sha256-<hex>.sig` tag).
//! - [`Policy`] is what the platform trusts: public keys and which plugins must be signed.
//!   [`Verifier`] checks an image's signatures against it and caches each verdict by
//!   digest, so a digest is verified once per policy.
//!
//! Signatures are cosign's simple-signing payloads, checked with the `sigstore` crate; a
//! signature covers the image manifest digest, which covers the image config and with it
//! the `dev.berth.manifest` label: a verified signature covers the permissions the image
//! declares.

mod credentials;
mod error;
pub mod keys;
mod policy;
mod registry;
mod sign;
#[cfg(feature = "testing")]
pub mod testing;
mod verify;

pub use credentials::Credentials;
pub use error::{Error, ErrorKind};
pub use policy::{Policy, TrustedKey};
pub use registry::{Registry, RegistryOptions, Resolved, has_registry_host};
pub use sign::Signer;
pub use verify::{Verdict, Verifier};
