//! Errors of the Docker backend.

/// What went wrong talking to the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No engine answered.
    #[error(
        "cannot reach the Docker Engine ({source}); start it (`systemctl start docker` or `dockerd &`) or set DOCKER_HOST"
    )]
    Unreachable {
        /// The transport error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine answered 404.
    #[error("{what} does not exist")]
    NotFound {
        /// The image, container or network.
        what: String,
    },
    /// The engine answered 409.
    #[error("{what} conflicts with an existing object: {message}")]
    Conflict {
        /// The object.
        what: String,
        /// The engine's words.
        message: String,
    },
    /// The engine refused a request with another status.
    #[error("the Docker Engine refused to {action} ({status}): {message}")]
    Daemon {
        /// What was asked.
        action: String,
        /// HTTP status.
        status: u16,
        /// The engine's words.
        message: String,
    },
    /// An image build step failed.
    #[error("the image build failed: {message}")]
    Build {
        /// The builder's words.
        message: String,
    },
    /// A registry refused a pull or push the engine made.
    #[error("{image}: the registry refused: {message}")]
    Registry {
        /// The image.
        image: String,
        /// The engine's words.
        message: String,
    },
    /// A request failed on the way (timeout, broken connection, undecodable answer).
    #[error("could not {action}: {source}")]
    Transport {
        /// What was asked.
        action: String,
        /// The error.
        #[source]
        source: bollard::errors::Error,
    },
    /// A build context could not be assembled.
    #[error("could not assemble the build context: {0}")]
    Context(#[source] std::io::Error),
    /// The manifest's limits could not be turned into container settings.
    #[error("the manifest's {field} is invalid: {message}")]
    Manifest {
        /// Field path under the manifest.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::Daemon { .. } => "daemon",
            Error::Build { .. } => "build",
            Error::Registry { .. } => "registry",
            Error::Transport { .. } => "transport",
            Error::Context(_) => "context",
            Error::Manifest { .. } => "manifest",
        }
    }

    /// Sorts a bollard error by the engine's status code.
    pub(crate) fn from_engine(action: &str, what: &str, e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code: 404, ..
            } => Error::NotFound { what: what.into() },
            B::DockerResponseServerError {
                status_code: 409,
                message,
            } => Error::Conflict {
                what: what.into(),
                message,
            },
            B::DockerResponseServerError {
                status_code,
                message,
            } => Error::Daemon {
                action: action.into(),
                status: status_code,
                message,
            },
            e @ (B::HyperLegacyError { .. }
            | B::HyperResponseError { .. }
            | B::IOError { .. }
            | B::SocketNotFoundError(_)) => Error::Unreachable { source: e },
            e => Error::Transport {
                action: action.into(),
                source: e,
            },
        }
    }
}
