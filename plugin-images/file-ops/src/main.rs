//! `file-ops`: reads, writes, lists and searches files under `/workspace`, and nowhere else.

use std::process::ExitCode;
use std::sync::Arc;

use berth_plugin_sdk::{Context, Error, HookAction, HookMode, Plugin, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod workspace;

use workspace::{Entry, FsError, Match, Workspace};

/// Where the workspace is mounted unless `FILE_OPS_ROOT` says otherwise.
const DEFAULT_ROOT: &str = "/workspace";
/// Environment variable that moves the root (used by tests).
const ROOT_ENV: &str = "FILE_OPS_ROOT";
/// Largest content `write` accepts.
const MAX_WRITE: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadInput {
    path: String,
}

#[derive(Serialize)]
struct ReadOutput {
    content: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteInput {
    path: String,
    content: String,
}

#[derive(Serialize)]
struct WriteOutput {
    bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListInput {
    path: Option<String>,
}

#[derive(Serialize)]
struct ListOutput {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchInput {
    pattern: String,
    path: Option<String>,
}

#[derive(Serialize)]
struct SearchOutput {
    matches: Vec<Match>,
}

fn to_error(e: FsError) -> Error {
    let status = match e {
        FsError::Outside(_) => StatusCode::FORBIDDEN,
        FsError::NotFound(_) => StatusCode::NOT_FOUND,
        FsError::WrongKind(_) | FsError::TooLarge(_) | FsError::NotText(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        FsError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Error::new(status, e.code(), e.to_string())
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("file operation failed: {e}")))?
        .map_err(to_error)
}

fn plugin(ws: Workspace) -> Plugin {
    let ws = Arc::new(ws);
    let (r, w, l, s) = (ws.clone(), ws.clone(), ws.clone(), ws);
    Plugin::new("file-ops", env!("CARGO_PKG_VERSION"))
        .capability("read", move |input: ReadInput, _ctx: Context| {
            let ws = r.clone();
            async move {
                let (content, size) = blocking(move || ws.read(&input.path)).await?;
                Ok(ReadOutput { content, size })
            }
        })
        .capability("write", move |input: WriteInput, _ctx: Context| {
            let ws = w.clone();
            async move {
                if input.content.len() > MAX_WRITE {
                    return Err(Error::invalid_input(format!(
                        "content is {} bytes; the limit is {MAX_WRITE}",
                        input.content.len()
                    )));
                }
                let bytes = blocking(move || ws.write(&input.path, &input.content)).await?;
                Ok(WriteOutput { bytes })
            }
        })
        .capability("list", move |input: ListInput, _ctx: Context| {
            let ws = l.clone();
            async move {
                let path = input.path.unwrap_or_else(|| ".".into());
                let entries = blocking(move || ws.list(&path)).await?;
                Ok(ListOutput { entries })
            }
        })
        .capability("search", move |input: SearchInput, _ctx: Context| {
            let ws = s.clone();
            async move {
                if input.pattern.is_empty() {
                    return Err(Error::invalid_input("pattern must not be empty"));
                }
                let path = input.path.unwrap_or_else(|| ".".into());
                let matches = blocking(move || ws.search(&input.pattern, &path)).await?;
                Ok(SearchOutput { matches })
            }
        })
        .hook(
            "file_changed",
            HookMode::Observe,
            |event: Value, _ctx: Context| async move {
                let path = event.get("path").and_then(Value::as_str).unwrap_or("?");
                berth_plugin_sdk::tracing::info!(path, "file changed");
                Ok(HookAction::Continue)
            },
        )
}

fn main() -> ExitCode {
    let root = std::env::var(ROOT_ENV).unwrap_or_else(|_| DEFAULT_ROOT.to_owned());
    plugin(Workspace::new(root)).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn traversal_is_answered_403_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Arc::new(Workspace::new(dir.path()));
        let e = blocking(move || ws.read("../etc/passwd"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.code(), "path_outside_workspace");
    }

    #[test]
    fn describe_lists_four_capabilities_and_the_observe_hook() {
        let d = plugin(Workspace::new("/workspace")).describe();
        let names: Vec<&str> = d.capabilities.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["read", "write", "list", "search"]);
        assert_eq!(d.hooks[0].mode, HookMode::Observe);
    }
}
