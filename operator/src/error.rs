//! The operator's one error type.

/// Everything that can go wrong while reconciling or running the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),

    /// Adding or removing the finalizer, or the reconcile inside it, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// A rendered object could not be serialized.
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },

    /// The object lacks a name or namespace the API needs.
    #[error("{0} has no {1}")]
    MissingField(String, &'static str),

    /// A CustomResourceDefinition the operator needs is not installed.
    #[error(
        "the {crd} CustomResourceDefinition is not installed in this cluster: install it with \
         `kubectl apply -f crds/` (or `helm install berth charts/berth`) and start the operator again"
    )]
    CrdMissing {
        /// The CRD's name, e.g. `plugins.berth.dev`.
        crd: &'static str,
    },

    /// Leader election could not read or write its Lease.
    #[error("leader election on Lease {lease}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// Another replica took the leader Lease, or it could not be renewed in time.
    #[error("lost the leader Lease {lease}; exiting so that this replica restarts as a standby")]
    LeadershipLost {
        /// `namespace/name` of the Lease.
        lease: String,
    },

    /// The operator's HTTP server (metrics, health) failed.
    #[error("serving {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// Registering or encoding metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[source] prometheus::Error),

    /// The Kubernetes client could not be configured.
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),

    /// The operating system's random source failed while minting a plugin credential.
    #[error("minting a plugin credential: {0}")]
    Random(#[source] std::io::Error),

    /// The operator's flags cannot work together, or a file they name cannot be read.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// A short, stable label for `berth_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::Serialize { .. } => "serialize",
            Error::MissingField(..) => "missing_field",
            Error::CrdMissing { .. } => "crd_missing",
            Error::Lease { .. } => "lease",
            Error::LeadershipLost { .. } => "leadership_lost",
            Error::Serve { .. } => "serve",
            Error::Metrics(_) => "metrics",
            Error::Connect(_) => "connect",
            Error::Random(_) => "random",
            Error::Config(_) => "config",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
