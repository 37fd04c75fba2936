//! The local base image for plugins in other languages. Nothing can be pulled here, so
//! `scripts/debian-base.sh` builds one image from Debian bookworm's packages (python3,
//! nodejs + tsc, Go, gcc) and tags it by its recipe; it stands in for every conventional
//! base (`python:3.12-slim`, `node:20-slim`, `golang:1.22`, `gcc:12`). `.ci/run` builds it
//! with the same script before the tests, so a test run only looks it up.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use super::{describe_output, repo};

/// The build arguments the language templates take their base image from.
pub const BASE_IMAGE_ARGS: [&str; 4] = ["PYTHON_IMAGE", "NODE_IMAGE", "GO_IMAGE", "C_IMAGE"];

/// `scripts/debian-base.sh`'s exit code when debootstrap is not installed.
const NO_DEBOOTSTRAP: i32 = 3;

/// The tag of the local language base, built on first use (once per process; the script's
/// file lock makes concurrent test binaries wait for one build). `None` when it cannot be
/// built because debootstrap is missing and `CI` is not set (the test then skips); under
/// `CI` that, like any failed build, panics.
pub fn language_base(test: &str) -> Option<String> {
    static BASE: OnceLock<Result<String, (i32, String)>> = OnceLock::new();
    let result = BASE.get_or_init(|| {
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(repo().join("scripts/debian-base.sh"))
            .output()
            .expect("run scripts/debian-base.sh");
        eprintln!(
            "scripts/debian-base.sh took {:.1}s\n{}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stderr)
        );
        let tag = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        match output.status.code() {
            Some(0) if !tag.is_empty() => Ok(tag),
            code => Err((code.unwrap_or(-1), describe_output(&output))),
        }
    });
    match result {
        Ok(tag) => Some(tag.clone()),
        Err((NO_DEBOOTSTRAP, why)) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "skipping {test}: the language base image needs debootstrap ({why}); set CI=1 to make this a failure"
            );
            None
        }
        Err((_, why)) => panic!(
            "{test}: scripts/debian-base.sh could not build the language base image (debootstrap and Debian's mirror are needed; .ci/run installs debootstrap):\n{why}"
        ),
    }
}
