//! One module per subcommand.

pub mod audit;
pub mod build;
pub mod crd;
pub mod dev;
pub mod gateway;
pub mod local;
pub mod new;
pub mod operator;
pub mod plugin;
pub mod render;
pub mod validate;
