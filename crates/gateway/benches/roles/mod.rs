//! What the gateway's benchmarks share: each role (load generator, gateway, plugins or
//! upstreams) on its own runtime and threads, as separate processes would be.

/// A runtime of `workers` threads that lives as long as the process, like another process.
#[allow(dead_code)] // Not every benchmark uses both forms.
pub fn role_runtime(name: &'static str, workers: usize) -> tokio::runtime::Handle {
    role_runtime_in(name, workers, None)
}

/// [`role_runtime`] whose threads live in the network namespace at `netns` (a
/// `/run/netns/NAME` path), so every socket they open is in that namespace.
#[allow(dead_code)]
pub fn role_runtime_in(
    name: &'static str,
    workers: usize,
    netns: Option<std::path::PathBuf>,
) -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name(name.into());
    let _ = thread.spawn(move || {
        let enter = move || {
            if let Some(path) = &netns {
                enter_netns(path);
            }
        };
        enter();
        let runtime = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name(name)
                .on_thread_start(enter)
                .enable_all()
                .build()
        }
        .expect("runtime");
        tx.send(runtime.handle().clone()).expect("handle");
        runtime.block_on(std::future::pending::<()>());
    });
    rx.recv().expect("runtime started")
}

/// Moves the calling thread into the network namespace at `path`.
#[allow(dead_code)]
pub fn enter_netns(path: &std::path::Path) {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
}
