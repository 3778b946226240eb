//! Background tasks tied to the life of one node.
//!
//! Not part of the transport: the node spawns its coordinator watches,
//! compactions and sends with it as much as the transport spawns its
//! connections. Everything runs on the current thread's `LocalSet`
//! (capnp-rpc is `!Send`).

/// Spawns the background tasks of one node on the current thread's
/// `LocalSet`, all tied to the node's life: when the node stops (returns,
/// dies, panics), every one of them is cancelled at its next poll, which
/// drops its sockets. Several nodes can so share one thread.
#[derive(Clone, Debug)]
pub(crate) struct Spawner {
    token: tokio_util::sync::CancellationToken,
}

impl Spawner {
    pub(crate) fn new() -> Self {
        Spawner { token: tokio_util::sync::CancellationToken::new() }
    }

    /// Cancels everything this spawner started when the guard is dropped.
    pub(crate) fn guard(&self) -> tokio_util::sync::DropGuard {
        self.token.clone().drop_guard()
    }

    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        let token = self.token.clone();
        tokio::task::spawn_local(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = task => {}
            }
        });
    }
}
