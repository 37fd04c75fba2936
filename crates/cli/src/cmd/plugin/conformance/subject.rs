//! The plugin under test: a container or a local process group, behind one interface the
//! checks use for health-exit detection, output, the signal and the wait.

use berth_docker::DockerClient;

use super::OUTPUT_LINES;
use super::process::{Exit, PluginProcess};

/// The plugin under test.
pub(super) enum Subject<'a> {
    /// A container on the test network.
    Container {
        docker: &'a DockerClient,
        id: String,
    },
    /// A local process group (`--exec`).
    Process(PluginProcess),
}

impl Subject<'_> {
    /// Why the plugin no longer runs, once it does not.
    pub(super) async fn stopped(&self) -> Option<String> {
        match self {
            Subject::Container { docker, id } => {
                let status = docker.container_status(id).await.ok()?;
                (!status.running).then(|| {
                    format!(
                        "the container exited with status {}{}",
                        status.exit_code.unwrap_or(-1),
                        if status.oom_killed {
                            " (killed: out of memory, raise spec.resources.memory)"
                        } else {
                            ""
                        }
                    )
                })
            }
            Subject::Process(process) => process
                .leader_exit()
                .map(|exit| format!("the process {exit}")),
        }
    }

    pub(super) async fn output(&self) -> Vec<String> {
        match self {
            Subject::Container { docker, id } => docker
                .logs(id, OUTPUT_LINES)
                .await
                .map(|logs| logs.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
            Subject::Process(process) => process.output(OUTPUT_LINES),
        }
    }

    pub(super) async fn terminate(&self) -> Result<(), String> {
        match self {
            Subject::Container { docker, id } => docker
                .signal(id, "SIGTERM")
                .await
                .map_err(|e| format!("could not send SIGTERM: {e}")),
            Subject::Process(process) => process
                .terminate()
                .map_err(|e| format!("could not send SIGTERM to the process group: {e}")),
        }
    }

    pub(super) async fn wait_exit(&mut self) -> Result<Exit, String> {
        match self {
            Subject::Container { docker, id } => docker
                .wait_exit(id)
                .await
                .map(|code| Exit::Code(i32::try_from(code).unwrap_or(-1)))
                .map_err(|e| format!("could not wait for the container: {e}")),
            Subject::Process(process) => process
                .wait()
                .await
                .ok_or_else(|| "the process group ended without an exit status".into()),
        }
    }

    pub(super) fn sigterm_hint(&self) -> &'static str {
        match self {
            Subject::Container { .. } => {
                "handle SIGTERM (as PID 1 the kernel ignores it otherwise)"
            }
            Subject::Process(_) => {
                "handle SIGTERM: stop accepting connections, finish the requests in flight, exit 0"
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM to `berth`.
pub(super) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
