//! Integration tests: a real gateway on 127.0.0.1 in front of real plugin servers.

mod audit;
mod bounds;
mod egress;
mod hooks;
mod invoke;
mod lifecycle;
mod metrics;
mod pushed;
mod standby;
mod support;
mod tiers;
mod usage;
