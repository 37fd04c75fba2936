//! `berth-operator`: reconciles `Plugin` and `PluginGrant` resources into hardened workloads.
//!
//! The split follows "pure core, thin adapters": [`render`] turns a plugin into Kubernetes
//! objects, [`approval`] and [`plan`] decide what should run and what the status says, all
//! without a client; [`supply_chain`] asks registries which digest an image names and who
//! signed it; [`controller`] and [`grants`] read the cluster, carry the plan out and report.
//! [`run`] wires them into the `berth operator` process with metrics, health endpoints and
//! leader election.
#![forbid(unsafe_code)]

pub use berth_api::approval;
pub mod audit;
pub mod benchmark;
pub mod config;
pub mod controller;
pub mod directory;
mod error;
pub mod grants;
pub mod leader;
pub mod live_tier;
pub mod metrics;
pub mod plan;
mod process;
pub mod render;
pub mod server;
pub mod supply_chain;
pub mod template;

#[cfg(test)]
mod bench_scenarios;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod scenarios;

pub use config::Config;
pub use error::{Error, Result};
pub use process::{check_crds, run, run_controllers};
