//! Faults injected into a node's fetches, to test exactly-once delivery.
//! The decision (which fetch is sent twice, which one loses its
//! connection) is made here, the same way for every transport; each
//! implementation's client side runs its fetches through an [`Injector`]
//! and knows how to cut its own connection.

use std::cell::Cell;
use std::future::Future;

use super::{CallFailure, Fetched};

/// Faults the client side injects, to test exactly-once delivery.
#[derive(Clone, Debug, Default)]
pub struct TransportFaults {
    /// Send every n-th fetch twice (0: never).
    pub duplicate_every: u64,
    /// Drop the connection under every n-th fetch after sending it
    /// (0: never). Only first attempts are cut: the connection carries
    /// every fetch in flight to that peer, so cutting retries too would
    /// never let a busy peer's fetches through.
    pub disconnect_every: u64,
}

/// Counts one node's fetches and applies its [`TransportFaults`] to them.
#[derive(Debug)]
pub(super) struct Injector {
    faults: TransportFaults,
    fetches: Cell<u64>,
}

impl Injector {
    pub(super) fn new(faults: TransportFaults) -> Self {
        Injector { faults, fetches: Cell::new(0) }
    }

    /// Runs the next fetch (attempt `attempt` of it) through `once`, which
    /// sends it once and, when told `true`, cuts the connection with the
    /// request out: once, twice (duplicates), or once cut. One result per
    /// send.
    pub(super) async fn fetch<F>(&self, attempt: u32, once: impl Fn(bool) -> F) -> Vec<Result<Fetched, CallFailure>>
    where
        F: Future<Output = Result<Fetched, CallFailure>>,
    {
        let n = self.fetches.get() + 1;
        self.fetches.set(n);
        let every = |k: u64| k != 0 && n % k == 0;
        if every(self.faults.duplicate_every) {
            let (a, b) = futures::join!(once(false), once(false));
            return vec![a, b];
        }
        let cut = attempt == 1 && every(self.faults.disconnect_every);
        vec![once(cut).await]
    }
}
