//! Berth's local backend on the Docker Engine API (through bollard).
//!
//! [`DockerClient`] wraps one engine connection; every call returns this crate's [`Error`],
//! which sorts daemon answers by status code. [`context`] builds image build contexts;
//! [`hardening`] turns a `Plugin` manifest into the container configuration that enforces
//! its limits and Berth's isolation defaults, as a pure function. An [`Instance`] names and
//! labels everything one `berth dev up` creates; [`networks`] gives each plugin its own
//! address-less internal network; [`managed`] finds and removes an instance's objects;
//! [`volumes`] creates its volumes writable by the plugin user; [`events`] and [`usage`]
//! watch its containers; [`readiness`] tells when a started plugin may take traffic.
//!
//! Local mode runs on top: [`supervisor`] keeps the installed plugins and the gateway
//! container running (a pure plan and restart policy, with the engine behind a trait a test
//! can fake), and [`control`] is the control plane the CLI's commands call — the state
//! directory, install, grants, and the wait for the supervisor's outcome.

pub mod client;
pub mod context;
pub mod control;
pub mod error;
pub mod events;
pub mod hardening;
pub mod instance;
pub mod managed;
pub mod networks;
pub mod readiness;
pub mod supervisor;
pub mod usage;
pub mod volumes;

pub use client::{BuildRequest, ContainerStatus, DockerClient, ImageInfo};
pub use context::BuildContext;
pub use error::{Error, Result};
pub use events::{ContainerEvent, EventAction};
pub use hardening::{ContainerOptions, FilesystemSource, plugin_container};
pub use instance::{
    INSTANCE_LABEL, Instance, MANIFEST_HASH_LABEL, PLUGIN_LABEL, REVISION_LABEL, ROLE_LABEL,
};
pub use managed::{ManagedContainer, Removed};
pub use readiness::{Describe, NotReady, describe_differences, wait_ready, wait_ready_with};
pub use usage::Usage;

/// Label on every container, network and image Berth creates; its value names the creator.
pub const MANAGED_BY_LABEL: &str = "dev.berth.managed-by";
/// The non-root user and group every plugin runs as.
pub const PLUGIN_USER: &str = "65532:65532";
