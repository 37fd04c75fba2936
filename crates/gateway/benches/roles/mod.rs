//! What the gateway's benchmarks share: each role (load generator, gateway, plugins or
//! upstreams) on its own runtime and threads, as separate processes would be.

/// A runtime of `workers` threads that lives as long as the process, like another process.
pub fn role_runtime(name: &'static str, workers: usize) -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name(name.into());
    let _ = thread.spawn(move || {
        let runtime = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name(name)
                .enable_all()
                .build()
        }
        .expect("runtime");
        tx.send(runtime.handle().clone()).expect("handle");
        runtime.block_on(std::future::pending::<()>());
    });
    rx.recv().expect("runtime started")
}
