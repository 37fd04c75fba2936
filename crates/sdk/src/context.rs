//! What a handler knows about the request besides its input.

use std::time::{Duration, Instant};

/// The request's identity, caller and deadline, taken from the `Berth-*` headers.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub(crate) request_id: Option<String>,
    pub(crate) caller: Option<String>,
    pub(crate) deadline: Option<Instant>,
}

impl Context {
    /// A context with no headers, for calling handlers directly in tests.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same context with a request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The same context with a deadline `budget` from now.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.deadline = Some(Instant::now() + budget);
        self
    }

    /// `Berth-Request-Id`, when the caller sent one. Pass it on to plugins you call.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// `Berth-Caller`: who asked, when known.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The instant after which the answer is no longer wanted.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed); `None` without a deadline.
    /// Send it on as `Berth-Deadline-Ms` when calling other plugins.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}
