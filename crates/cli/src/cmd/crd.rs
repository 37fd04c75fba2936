//! `berth crd`: print the CRDs generated from the Rust types.

use std::process::ExitCode;

use berth_api::crd;

/// Options of `berth crd`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub write: Option<std::path::PathBuf>,
}

/// Prints every CRD as a multi-document stream, or writes them into a directory.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.write {
        None => print!("{}", crd::all_crds_yaml()),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in crd::crd_files() {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
