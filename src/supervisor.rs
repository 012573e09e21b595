//! Background tasks (model discovery, and whatever joins it later) are spawned
//! here only, so that shutdown can cancel every one of them and wait for them.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Owns the background tasks of one server.
#[derive(Clone, Default)]
pub struct Supervisor {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task`, which is dropped at its next `.await` once shutdown begins.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = token.cancelled() => tracing::debug!(task = name, "background task cancelled"),
                () = task => tracing::debug!(task = name, "background task finished"),
            }
        });
    }

    /// A token that fires when shutdown begins.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Cancels every task and waits until all have stopped.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
