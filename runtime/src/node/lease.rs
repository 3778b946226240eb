//! Keeping a node's lease alive, on a thread of its own.
//!
//! A node's keep-alives must not wait behind its handlers: a thread that
//! hosts many nodes (a `LocalCluster` of a thousand tasks on two cores) or
//! one busy handler would otherwise let leases lapse while every node is
//! healthy. So the keep-alive loops of every node of the process run on
//! one dedicated thread (`taskgraph-leases`), which does nothing else, and
//! report to their node's loop through a channel: the lease is gone, or
//! the coordinator has been unreachable for longer than a node waits.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::coord::{CoordError, Coordinator, LeaseId};

/// What the keeper tells a node about its lease.
#[derive(Debug)]
pub(crate) enum LeaseNews {
    /// The coordinator says the lease is gone (it expired, say while the
    /// coordinator or this process was paused).
    Lost(LeaseId),
    /// The coordinator has been unreachable for longer than a node waits.
    Unreachable(String),
}

/// Until when a node certainly holds its lease: a TTL after the last
/// keep-alive that succeeded was sent.
#[derive(Clone, Debug)]
pub(crate) struct SureUntil(Arc<Mutex<Instant>>);

impl SureUntil {
    pub(crate) fn new(at: Instant) -> Self {
        SureUntil(Arc::new(Mutex::new(at)))
    }
    pub(crate) fn get(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

/// A running keep-alive loop; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Keeper(tokio::task::JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The process's keep-alive thread (started on first use).
fn runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("taskgraph-leases".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for keep-alives");
                let _ = tx.send(rt.handle().clone());
                // Runs for the life of the process.
                rt.block_on(std::future::pending::<()>());
            })
            .expect("a thread for keep-alives");
        rx.recv().expect("the keep-alive thread starts")
    })
}

/// Keeps `lease` (of TTL `ttl`) alive until the returned [`Keeper`] is
/// dropped or the lease is gone, telling `news` what happens to it.
pub(crate) fn keep(
    coord: Arc<dyn Coordinator>,
    lease: LeaseId,
    ttl: Duration,
    patience: Duration,
    sure_until: SureUntil,
    news: mpsc::UnboundedSender<LeaseNews>,
) -> Keeper {
    Keeper(runtime().spawn(keep_alive(coord, lease, ttl, patience, sure_until, news)))
}

async fn keep_alive(
    coord: Arc<dyn Coordinator>,
    lease: LeaseId,
    ttl: Duration,
    patience: Duration,
    sure_until: SureUntil,
    news: mpsc::UnboundedSender<LeaseNews>,
) {
    let period = (ttl / 3).max(Duration::from_millis(10));
    let mut unreachable_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(period).await;
        if news.is_closed() {
            return;
        }
        let sent = Instant::now();
        match coord.keep_alive(lease).await {
            Ok(()) => {
                sure_until.set(sent + ttl);
                unreachable_since = None;
            }
            // The coordinator is away (restarting, say): etcd gives every
            // lease a full TTL when it is back, so keep trying, for a while.
            Err(CoordError::Unavailable(why)) => {
                let since = *unreachable_since.get_or_insert(sent);
                if since.elapsed() > patience {
                    let _ = news.send(LeaseNews::Unreachable(format!(
                        "the coordinator has been unreachable for {:.1?}: {why}",
                        since.elapsed()
                    )));
                    return;
                }
                tracing::debug!(%why, "keep-alive: coordinator unreachable; retrying");
            }
            Err(e) => {
                tracing::warn!(lease, error = %e, "keep-alive: the lease is gone");
                let _ = news.send(LeaseNews::Lost(lease));
                return;
            }
        }
    }
}
