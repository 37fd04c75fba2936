//! One module per subcommand.

pub mod crd;
pub mod validate;
