//! `berth bench`'s machinery: the load generator ([`load`]), the gateway's Prometheus
//! series before and after a run ([`prom`]), the plugin's CPU and memory while it runs
//! ([`resources`]), and the HTML report ([`report`]). The command itself is
//! `crate::cmd::bench`.

pub mod load;
pub mod prom;
pub mod report;
pub mod resources;
