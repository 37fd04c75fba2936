use std::fmt;

/// What went wrong, in the terms a platform operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The reference cannot be parsed.
    BadReference,
    /// The registry cannot be reached (connection refused, DNS, TLS).
    Unreachable,
    /// The registry refused the credentials (missing, wrong or expired).
    Unauthorized,
    /// The registry does not hold that tag or digest.
    NotFound,
    /// The image has no signature.
    Unsigned,
    /// The image is signed, but by none of the trusted keys.
    WrongKey,
    /// A signature is stored for the image but cannot be read.
    Malformed,
    /// A key file cannot be read or is of an unsupported kind.
    BadKey,
    /// Anything else the registry answered.
    Registry,
}

impl ErrorKind {
    /// A short reason, CamelCase, for conditions, Events and audit details.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::BadReference => "BadImageReference",
            ErrorKind::Unreachable => "RegistryUnreachable",
            ErrorKind::Unauthorized => "RegistryUnauthorized",
            ErrorKind::NotFound => "ImageNotFound",
            ErrorKind::Unsigned => "Unsigned",
            ErrorKind::WrongKey => "UntrustedSignature",
            ErrorKind::Malformed => "MalformedSignature",
            ErrorKind::BadKey => "BadKey",
            ErrorKind::Registry => "RegistryError",
        }
    }

    /// Whether the answer says something about the image itself (a refusal), rather than
    /// about reaching it (which may succeed on the next try).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            ErrorKind::Unsigned | ErrorKind::WrongKey | ErrorKind::Malformed
        )
    }
}

/// An error with its kind and a message that names the image and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Classifies a registry client error for `what` (an image or a tag).
    pub(crate) fn from_oci(what: &str, e: oci_client::errors::OciDistributionError) -> Self {
        use oci_client::errors::{OciDistributionError as E, OciErrorCode};
        let text = e.to_string();
        match &e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "{what}: the registry refused the credentials ({text}); log in again (`docker login`, or update the pull secret)"
                ),
            ),
            E::ImageManifestNotFoundError(_) => Error::new(
                ErrorKind::NotFound,
                format!("{what}: the registry has no such manifest; push it first (`berth push`)"),
            ),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    Error::new(
                        ErrorKind::Unauthorized,
                        format!(
                            "{what}: the registry refused the credentials ({text}); log in again (`docker login`, or update the pull secret)"
                        ),
                    )
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "{what}: the registry has no such image ({text}); push it first (`berth push`)"
                        ),
                    )
                } else {
                    Error::new(ErrorKind::Registry, format!("{what}: {text}"))
                }
            }
            E::ServerError { code, .. } if *code == 404 => Error::new(
                ErrorKind::NotFound,
                format!("{what}: the registry has no such image; push it first (`berth push`)"),
            ),
            E::ServerError { code, .. } if *code == 401 || *code == 403 => Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "{what}: the registry refused the credentials ({text}); log in again (`docker login`, or update the pull secret)"
                ),
            ),
            E::RequestError(r) if r.is_connect() || r.is_timeout() || r.is_request() => Error::new(
                ErrorKind::Unreachable,
                format!(
                    "{what}: cannot reach the registry ({}); check that it runs and the address is right",
                    chain(r)
                ),
            ),
            _ => Error::new(ErrorKind::Registry, format!("{what}: {text}")),
        }
    }
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
