//! Berth's local backend on the Docker Engine API (through bollard).
//!
//! [`DockerClient`] wraps one engine connection; every call returns this crate's [`Error`],
//! which sorts daemon answers by status code. [`context`] builds image build contexts;
//! [`hardening`] turns a `Plugin` manifest into the container configuration that enforces
//! its limits and Berth's isolation defaults, as a pure function.

pub mod client;
pub mod context;
pub mod error;
pub mod hardening;

pub use client::{BuildRequest, ContainerStatus, DockerClient, ImageInfo};
pub use context::BuildContext;
pub use error::{Error, Result};
pub use hardening::{ContainerOptions, plugin_container};

/// Image label that carries the plugin's manifest (`berth.yaml`, verbatim).
pub const MANIFEST_LABEL: &str = "dev.berth.manifest";
/// Label on every container, network and image Berth creates; its value names the creator.
pub const MANAGED_BY_LABEL: &str = "dev.berth.managed-by";
/// The non-root user and group every plugin runs as.
pub const PLUGIN_USER: &str = "65532:65532";
