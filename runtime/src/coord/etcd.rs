//! The etcd coordinator (cargo feature `etcd`): [`Etcd`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, LeaseClient,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions, WatchStream,
};
use tokio::sync::{mpsc, oneshot};

use super::{CoordError, CoordResult, Coordinator, Event, Expect, KeyValue, LeaseId, Revision, Watch};

/// etcd's `MaxLeaseTTL`: the longest TTL it grants, in seconds.
const MAX_TTL_SECS: u64 = 9_000_000_000;

/// The largest gRPC response the client decodes (tonic's default is
/// 4 MiB; a `get_prefix` or a watch replay of a busy prefix can be larger).
const MAX_DECODED_MESSAGE: usize = 64 << 20;

/// The I/O thread's name (Linux shows the first 15 bytes).
const IO_THREAD_NAME: &str = "tg-etcd-io";

/// How [`Etcd::connect`] talks to etcd. Build it with
/// [`EtcdOptions::default`] and change the fields you need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// How long [`Etcd::connect`] keeps trying to reach etcd (and the TCP
    /// connect timeout of every later reconnection). Default 5 s.
    pub connect_timeout: Duration,
    /// How long one operation may take before it fails with
    /// [`CoordError::Unavailable`]. A write that timed out may still have
    /// been applied. Default 5 s.
    pub request_timeout: Duration,
    /// The HTTP/2 keep-alive ping interval while requests or watches are
    /// open, which detects a connection that died silently. etcd answers
    /// pings more frequent than its `--grpc-keepalive-min-time` (5 s by
    /// default) by closing the connection ("too many pings"), so keep this
    /// at or above that. Default 10 s.
    pub keep_alive_interval: Duration,
    /// How long to wait for a keep-alive ping's answer before the
    /// connection is declared dead. Default 5 s.
    pub keep_alive_timeout: Duration,
    /// How long a [`Watch`] keeps trying to re-establish itself after its
    /// stream broke (etcd restarted, the connection dropped) before it
    /// delivers [`CoordError::Unavailable`] and ends (its last try starts
    /// at this limit and may take up to `request_timeout`). Default 30 s.
    pub watch_retry_limit: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            watch_retry_limit: Duration::from_secs(30),
        }
    }
}

/// A [`Coordinator`] backed by an etcd cluster (v3 API, etcd 3.4 or newer),
/// through the `etcd-client` crate.
///
/// Every operation is one etcd request; the transactions are etcd
/// transactions:
///
/// * [`create`](Coordinator::create): `if create_revision(key) == 0 then
///   put, get else get`;
/// * [`compare_and_swap`](Coordinator::compare_and_swap): the comparison of
///   [`Expect`] (`Absent`: `create_revision == 0`; `Value(v)`:
///   `create_revision > 0 && value == v`; `ModRevision(r)`:
///   `create_revision > 0 && mod_revision == r`), then put + get, else get.
///   The explicit existence test matters: in etcd, `mod_revision == 0`
///   holds for a *missing* key, while `Expect::ModRevision(r)` means "exists
///   and was last written at `r`";
/// * [`compare_and_delete`](Coordinator::compare_and_delete):
///   `if create_revision > 0 && mod_revision == r then delete`.
///
/// etcd checks a write's lease only on the branch of a transaction that it
/// takes, so a `create` or `compare_and_swap` whose comparison fails never
/// reports [`CoordError::LeaseNotFound`], as in the embedded store.
///
/// **Leases.** etcd's TTLs are whole seconds: [`grant`](Coordinator::grant)
/// rounds the requested [`Duration`] *up* to whole seconds, and etcd may
/// grant more than that: its minimum TTL is `1.5 × election timeout`
/// rounded up to a second (2 s with etcd's default flags, 1 s with
/// `--heartbeat-interval=10 --election-timeout=50`). etcd checks for
/// expired leases every 500 ms, so keys vanish up to about 0.5 s after the
/// TTL. When an etcd member becomes leader (after a restart, say), every
/// lease is renewed for its full TTL. A lease id of `0` means "no lease" to
/// etcd and is never granted, so writing with `Some(0)` is
/// [`CoordError::LeaseNotFound`].
///
/// **Watches** are etcd watches of the prefix from the requested revision,
/// registered (etcd confirmed them) before [`watch`](Coordinator::watch)
/// returns. If the stream breaks (etcd restarted, the connection dropped),
/// the watch is re-established from the revision after the last one it
/// delivered, retrying with backoff for
/// [`watch_retry_limit`](EtcdOptions::watch_retry_limit); so no change is
/// missed or repeated across reconnects. A watch whose start revision was
/// compacted away (also on a resume after a long outage) delivers
/// [`CoordError::Compacted`] and ends; if etcd stays unreachable past the
/// limit, it delivers [`CoordError::Unavailable`] and ends. A watch "from
/// now" (`from <= 0`) starts after the revision etcd reported when it
/// registered the watch.
///
/// **Keys** are strings; a key written by another etcd client that is not
/// UTF-8 is shown with `U+FFFD` replacement characters.
///
/// **Errors.** Failing to reach etcd, a timeout
/// ([`request_timeout`](EtcdOptions::request_timeout)) or an etcd-side
/// failure (no leader, out of space) is [`CoordError::Unavailable`]; a
/// request etcd refuses as malformed is [`CoordError::Invalid`]. Nothing
/// panics. An operation that failed as unavailable may still have been
/// applied (as with any remote store); nothing is retried internally except
/// [`connect`](Etcd::connect)'s first contact and a watch's re-registration.
///
/// **Threads.** The client's network I/O runs on a small tokio runtime of
/// its own, on one background thread (`tg-etcd-io`), so the handle works
/// from any thread and any executor (a node's current-thread runtime, a
/// `LocalSet`, `futures::executor::block_on`); every operation hops to that
/// thread and back. Cloning is cheap and every clone shares the connection;
/// when the last clone is dropped, the thread stops and every open
/// [`Watch`] ends (`None`).
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

/// What the clones of one [`Etcd`] share.
struct Inner {
    endpoints: Vec<String>,
    options: EtcdOptions,
    kv: KvClient,
    lease: LeaseClient,
    watch: WatchClient,
    /// The I/O runtime, which runs every request.
    io: tokio::runtime::Handle,
    /// Dropped with the last clone: the I/O thread then stops its runtime.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.inner.endpoints)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Connects to the etcd cluster at `endpoints` (`host:port` or
    /// `http://host:port`), trying for up to
    /// [`connect_timeout`](EtcdOptions::connect_timeout) until one request
    /// succeeds: [`CoordError::Unavailable`] if none did,
    /// [`CoordError::Invalid`] for no or malformed endpoints.
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> CoordResult<Etcd> {
        if endpoints.is_empty() {
            return Err(CoordError::Invalid("no etcd endpoints given".into()));
        }
        let (io, stop) = start_io_thread()?;
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            // etcd (PermitWithoutStream = false) answers pings on an idle
            // connection with GOAWAY "too many pings".
            .with_keep_alive_while_idle(false)
            // A member that lost its leader fails requests and cancels
            // watches (which then re-register, possibly on another member)
            // instead of serving stale data or going silent.
            .with_require_leader(true);
        let eps = endpoints.to_vec();
        let timeout = options.connect_timeout;
        let connecting = io.spawn(async move {
            let client = Client::connect(&eps, Some(connect_options))
                .await
                .map_err(|e| match e {
                    etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
                        CoordError::Invalid(format!("etcd endpoints {eps:?}: {e}"))
                    }
                    e => unavailable("connect", e),
                })?;
            // The channel connects lazily: make sure etcd answers.
            let deadline = Instant::now() + timeout;
            let mut kv = client.kv_client();
            let mut pause = Duration::from_millis(20);
            loop {
                // (The last try, at the deadline, still gets a moment.)
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(50));
                let error = match tokio::time::timeout(left, kv.get("\0", Some(GetOptions::new().with_count_only()))).await {
                    Ok(Ok(_)) => return Ok(client),
                    Ok(Err(e)) => unavailable("connect", e),
                    Err(_) => CoordError::Unavailable(format!("connect: no answer from etcd at {eps:?} within {timeout:?}")),
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(error);
                }
                // The last try is at the deadline.
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        });
        let client = match connecting.await {
            Ok(result) => result?,
            Err(e) => return Err(CoordError::Unavailable(format!("connect: {e}"))),
        };
        Ok(Etcd {
            inner: Arc::new(Inner {
                endpoints: endpoints.to_vec(),
                options,
                kv: client.kv_client().max_decoding_message_size(MAX_DECODED_MESSAGE),
                lease: client.lease_client(),
                watch: client.watch_client().max_decoding_message_size(MAX_DECODED_MESSAGE),
                io,
                _stop: stop,
            }),
        })
    }

    /// The endpoints this handle was connected to.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Compacts etcd's history before `revision` (waiting until the
    /// compaction is physically applied): watches from an older revision
    /// then fail with [`CoordError::Compacted`]. As with
    /// [`Embedded::compact`](super::Embedded::compact): a future `revision`
    /// is [`CoordError::Invalid`], compacting below the last compaction is
    /// [`CoordError::Compacted`], and compacting at exactly it does
    /// nothing.
    pub async fn compact(&self, revision: Revision) -> CoordResult<()> {
        let mut kv = self.inner.kv.clone();
        let watch = self.inner.watch.clone();
        self.run("compact", async move {
            match kv.compact(revision, Some(CompactionOptions::new().with_physical())).await {
                Ok(_) => Ok(()),
                Err(e) if is_compacted(&e) => {
                    let oldest = oldest_revision(watch).await?;
                    if revision == oldest {
                        Ok(())
                    } else {
                        Err(CoordError::Compacted { requested: revision, oldest })
                    }
                }
                Err(e) if is_future_revision(&e) => Err(CoordError::Invalid(format!(
                    "cannot compact at revision {revision}: it is in the future ({e})"
                ))),
                Err(e) => Err(map_error("compact", None, e)),
            }
        })
        .await
    }

    /// Runs `op` on the I/O runtime within the request timeout. Dropping
    /// the returned future abandons the request.
    async fn run<T, F>(&self, what: &'static str, op: F) -> CoordResult<T>
    where
        T: Send + 'static,
        F: Future<Output = CoordResult<T>> + Send + 'static,
    {
        let timeout = self.inner.options.request_timeout;
        let task = self.inner.io.spawn(async move {
            match tokio::time::timeout(timeout, op).await {
                Ok(result) => result,
                Err(_) => Err(CoordError::Unavailable(format!("{what}: no answer from etcd within {timeout:?}"))),
            }
        });
        match AbortOnDrop(task).await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Err(CoordError::Closed),
            Err(e) => Err(CoordError::Unavailable(format!("{what}: {e}"))),
        }
    }
}

/// Aborts a task when dropped (so a caller that gives up on an operation
/// does not leave it running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        // `JoinHandle` is `Unpin`.
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the I/O thread and its current-thread runtime; the runtime stops
/// (dropping its tasks) when the returned sender is dropped.
fn start_io_thread() -> CoordResult<(tokio::runtime::Handle, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CoordError::Unavailable(format!("cannot start the etcd client's runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(IO_THREAD_NAME.to_owned())
        .spawn(move || {
            // Returns when every `Etcd` clone is gone; dropping the runtime
            // then drops the client and every watch task.
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })
        .map_err(|e| CoordError::Unavailable(format!("cannot start the etcd client's thread: {e}")))?;
    Ok((handle, stop))
}

// ---- conversions and errors ---------------------------------------------

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    }
}

/// The revision in a response's header.
fn header_revision(what: &str, header: Option<&etcd_client::ResponseHeader>) -> CoordResult<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| CoordError::Unavailable(format!("{what}: etcd's response has no header")))
}

/// The key read by the (only) get of the branch a transaction took.
fn txn_get(txn: &TxnResponse) -> Option<KeyValue> {
    txn.op_responses().iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(to_kv),
        _ => None,
    })
}

fn put_options(lease: Option<LeaseId>) -> CoordResult<Option<PutOptions>> {
    match lease {
        None => Ok(None),
        // etcd reads lease 0 as "no lease"; it never grants it.
        Some(0) => Err(CoordError::LeaseNotFound(0)),
        Some(id) => Ok(Some(PutOptions::new().with_lease(id))),
    }
}

fn unavailable(what: &str, e: etcd_client::Error) -> CoordError {
    CoordError::Unavailable(format!("{what}: {e}"))
}

/// Maps an etcd-client error; `lease` is the lease the request names, if
/// any (etcd's "requested lease not found" becomes `LeaseNotFound`).
fn map_error(what: &str, lease: Option<LeaseId>, e: etcd_client::Error) -> CoordError {
    use tonic_code::*;
    match &e {
        etcd_client::Error::GRpcStatus(status) => {
            let code = status.code() as i32;
            if let (Some(id), true) = (lease, status.message().contains("lease not found")) {
                return CoordError::LeaseNotFound(id);
            }
            match code {
                INVALID_ARGUMENT | OUT_OF_RANGE | FAILED_PRECONDITION => {
                    CoordError::Invalid(format!("{what}: etcd refused the request: {}", status.message()))
                }
                _ => unavailable(what, e),
            }
        }
        etcd_client::Error::LeaseKeepAliveError(message) if message.contains("not found") => match lease {
            Some(id) => CoordError::LeaseNotFound(id),
            None => unavailable(what, e),
        },
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => CoordError::Invalid(format!("{what}: {e}")),
        _ => unavailable(what, e),
    }
}

/// gRPC status codes (tonic is not a direct dependency; its `Code` is
/// `#[repr(i32)]` with the standard numbering).
mod tonic_code {
    pub const NOT_FOUND: i32 = 5;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
}

fn status_message(e: &etcd_client::Error) -> Option<(i32, &str)> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some((status.code() as i32, status.message())),
        _ => None,
    }
}

/// etcd's "mvcc: required revision has been compacted".
fn is_compacted(e: &etcd_client::Error) -> bool {
    status_message(e).is_some_and(|(code, message)| code == tonic_code::OUT_OF_RANGE && message.contains("compacted"))
}

/// etcd's "mvcc: required revision is a future revision".
fn is_future_revision(e: &etcd_client::Error) -> bool {
    status_message(e).is_some_and(|(code, message)| code == tonic_code::OUT_OF_RANGE && message.contains("future revision"))
}

/// etcd's "requested lease not found".
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    status_message(e).is_some_and(|(code, message)| code == tonic_code::NOT_FOUND && message.contains("lease not found"))
}

// ---- the trait ------------------------------------------------------------

#[async_trait]
impl Coordinator for Etcd {
    async fn grant(&self, ttl: Duration) -> CoordResult<LeaseId> {
        if ttl.is_zero() {
            return Err(CoordError::Invalid("a lease's TTL must be greater than zero".into()));
        }
        // Whole seconds, rounded up.
        let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0));
        if secs > MAX_TTL_SECS {
            return Err(CoordError::Invalid(format!("a lease's TTL may be at most {MAX_TTL_SECS} s, not {ttl:?}")));
        }
        let mut lease = self.inner.lease.clone();
        self.run("grant", async move {
            let granted = lease.grant(secs as i64, None).await.map_err(|e| map_error("grant", None, e))?;
            if !granted.error().is_empty() {
                return Err(CoordError::Unavailable(format!("grant: {}", granted.error())));
            }
            if granted.ttl() != secs as i64 {
                tracing::debug!(requested = secs, granted = granted.ttl(), "etcd granted a lease with another TTL than requested");
            }
            Ok(granted.id())
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> CoordResult<()> {
        let mut client = self.inner.lease.clone();
        self.run("keep_alive", async move {
            // One LeaseKeepAlive round trip: etcd-client sends the request
            // and reads the answer (TTL <= 0: the lease is gone); dropping
            // the keeper and its stream then closes the stream.
            let (_keeper, _stream) = client.keep_alive(lease).await.map_err(|e| map_error("keep_alive", Some(lease), e))?;
            Ok(())
        })
        .await
    }

    async fn revoke(&self, lease: LeaseId) -> CoordResult<()> {
        let mut client = self.inner.lease.clone();
        self.run("revoke", async move {
            match client.revoke(lease).await {
                Ok(_) => Ok(()),
                Err(e) if is_lease_not_found(&e) => Ok(()),
                Err(e) => Err(map_error("revoke", None, e)),
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> CoordResult<Option<KeyValue>> {
        let mut kv = self.inner.kv.clone();
        let key = key.to_owned();
        self.run("get", async move {
            let got = kv.get(key, None).await.map_err(|e| map_error("get", None, e))?;
            Ok(got.kvs().first().map(to_kv))
        })
        .await
    }

    async fn get_prefix(&self, prefix: &str) -> CoordResult<(Vec<KeyValue>, Revision)> {
        let mut kv = self.inner.kv.clone();
        let prefix = prefix.to_owned();
        self.run("get_prefix", async move {
            // etcd returns a range sorted by key (bytewise).
            let got = kv
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| map_error("get_prefix", None, e))?;
            let revision = header_revision("get_prefix", got.header())?;
            Ok((got.kvs().iter().map(to_kv).collect(), revision))
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Revision> {
        let options = put_options(lease)?;
        let mut kv = self.inner.kv.clone();
        let (key, value) = (key.to_owned(), value.to_vec());
        self.run("put", async move {
            let put = kv.put(key, value, options).await.map_err(|e| map_error("put", lease, e))?;
            header_revision("put", put.header())
        })
        .await
    }

    async fn delete(&self, key: &str) -> CoordResult<bool> {
        let mut kv = self.inner.kv.clone();
        let key = key.to_owned();
        self.run("delete", async move {
            let deleted = kv.delete(key, None).await.map_err(|e| map_error("delete", None, e))?;
            Ok(deleted.deleted() > 0)
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> CoordResult<usize> {
        let mut kv = self.inner.kv.clone();
        let prefix = prefix.to_owned();
        self.run("delete_prefix", async move {
            let deleted = kv
                .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                .await
                .map_err(|e| map_error("delete_prefix", None, e))?;
            Ok(usize::try_from(deleted.deleted()).unwrap_or(0))
        })
        .await
    }

    async fn create(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> CoordResult<Result<KeyValue, KeyValue>> {
        let options = put_options(lease)?;
        let mut kv = self.inner.kv.clone();
        let (key, value) = (key.to_owned(), value.to_vec());
        self.run("create", async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value, options), TxnOp::get(key.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            let done = kv.txn(txn).await.map_err(|e| map_error("create", lease, e))?;
            let kv = txn_get(&done)
                .ok_or_else(|| CoordError::Unavailable(format!("create: etcd's transaction on {key:?} read no key")))?;
            Ok(if done.succeeded() { Ok(kv) } else { Err(kv) })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> CoordResult<Result<KeyValue, Option<KeyValue>>> {
        let options = put_options(lease)?;
        let mut kv = self.inner.kv.clone();
        let (key, value) = (key.to_owned(), value.to_vec());
        self.run("compare_and_swap", async move {
            let when = compares(&key, expect);
            let txn = Txn::new()
                .when(when)
                .and_then([TxnOp::put(key.clone(), value, options), TxnOp::get(key.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            let done = kv.txn(txn).await.map_err(|e| map_error("compare_and_swap", lease, e))?;
            let current = txn_get(&done);
            if done.succeeded() {
                current
                    .map(Ok)
                    .ok_or_else(|| CoordError::Unavailable(format!("compare_and_swap: etcd's transaction on {key:?} read no key")))
            } else {
                Ok(Err(current))
            }
        })
        .await
    }

    async fn compare_and_swap_all(&self, key: &str, expect: Expect, value: &[u8], puts: &[(String, Vec<u8>)]) -> CoordResult<bool> {
        let mut kv = self.inner.kv.clone();
        let (key, value, puts) = (key.to_owned(), value.to_vec(), puts.to_vec());
        self.run("compare_and_swap_all", async move {
            let when = compares(&key, expect);
            let mut ops: Vec<TxnOp> = puts.into_iter().map(|(k, v)| TxnOp::put(k, v, None)).collect();
            ops.push(TxnOp::put(key, value, None));
            let done = kv.txn(Txn::new().when(when).and_then(ops)).await.map_err(|e| map_error("compare_and_swap_all", None, e))?;
            Ok(done.succeeded())
        })
        .await
    }

    async fn compare_and_delete(&self, key: &str, mod_revision: Revision) -> CoordResult<bool> {
        let mut kv = self.inner.kv.clone();
        let key = key.to_owned();
        self.run("compare_and_delete", async move {
            // Without the existence test, `mod_revision == 0` would hold
            // for a missing key.
            let txn = Txn::new()
                .when([
                    Compare::create_revision(key.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision),
                ])
                .and_then([TxnOp::delete(key, None)]);
            let done = kv.txn(txn).await.map_err(|e| map_error("compare_and_delete", None, e))?;
            let deleted = done.op_responses().iter().any(|op| matches!(op, TxnOpResponse::Delete(d) if d.deleted() > 0));
            Ok(done.succeeded() && deleted)
        })
        .await
    }

    /// etcd's compaction, not waiting for the physical part: once etcd
    /// answers, reads and watches at older revisions fail (`Compacted`);
    /// the space is freed in etcd's background (reused by later writes; the
    /// database file shrinks only with `etcdctl defrag`).
    async fn compact(&self, revision: Revision) -> CoordResult<()> {
        if revision <= 1 {
            // A fresh etcd is at revision 1: there is nothing before it.
            return Ok(());
        }
        let mut kv = self.inner.kv.clone();
        self.run("compact", async move {
            match kv.compact(revision, None).await {
                Ok(_) => Ok(()),
                // At or below the last compaction: nothing to do.
                Err(e) if is_compacted(&e) => Ok(()),
                Err(e) if is_future_revision(&e) => Err(CoordError::Invalid(format!(
                    "cannot compact at revision {revision}: it is in the future ({e})"
                ))),
                Err(e) => Err(map_error("compact", None, e)),
            }
        })
        .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> CoordResult<Watch> {
        let client = self.inner.watch.clone();
        let options = self.inner.options.clone();
        let prefix = prefix.to_owned();
        let (events, rx) = mpsc::unbounded_channel();
        // The task registers the watch, reports that (or why not) through
        // `registered`, then pumps events until the `Watch` is dropped.
        let (registered, is_registered) = oneshot::channel();
        drop(self.inner.io.spawn(run_watch(client, prefix, from, options, events, registered)));
        match is_registered.await {
            Ok(Ok(())) => Ok(Watch::new(rx)),
            Ok(Err(e)) => Err(e),
            // The I/O runtime is shutting down.
            Err(_) => Err(CoordError::Closed),
        }
    }
}

// ---- watches --------------------------------------------------------------

/// Why a watch stream could not be (re-)registered.
enum OpenError {
    /// The start revision is compacted away: final.
    Compacted(CoordError),
    /// Anything else: worth retrying.
    Failed(CoordError),
}

/// Registers a watch of `prefix` from `start` (`0`: from now) and waits for
/// etcd's confirmation: the stream and the revision etcd was at.
async fn open_watch(client: &mut WatchClient, prefix: &str, start: Revision) -> Result<(WatchStream, Revision), OpenError> {
    let options = WatchOptions::new().with_prefix().with_start_revision(start.max(0));
    let mut stream = client
        .watch(prefix, Some(options))
        .await
        .map_err(|e| OpenError::Failed(map_error("watch", None, e)))?;
    let created = match stream.message().await {
        Ok(Some(response)) => response,
        Ok(None) => return Err(OpenError::Failed(CoordError::Unavailable("watch: etcd closed the stream".into()))),
        Err(e) => return Err(OpenError::Failed(map_error("watch", None, e))),
    };
    if created.compact_revision() > 0 {
        return Err(OpenError::Compacted(CoordError::Compacted {
            requested: start,
            oldest: created.compact_revision(),
        }));
    }
    if !created.created() || created.canceled() {
        return Err(OpenError::Failed(CoordError::Unavailable(format!(
            "watch: etcd did not register the watch: {}",
            created.cancel_reason()
        ))));
    }
    let revision = header_revision("watch", created.header()).map_err(OpenError::Failed)?;
    Ok((stream, revision))
}

/// The oldest revision etcd still keeps (its last compaction, or 1): a
/// watch from revision 1 is refused with it.
async fn oldest_revision(mut client: WatchClient) -> CoordResult<Revision> {
    // The key does not matter; nothing is ever written under it.
    let (mut stream, _) = match open_watch(&mut client, "\0taskgraph/oldest-revision-probe", 1).await {
        Ok(opened) => opened,
        Err(OpenError::Compacted(CoordError::Compacted { oldest, .. })) => return Ok(oldest),
        Err(OpenError::Compacted(e) | OpenError::Failed(e)) => return Err(e),
    };
    // etcd confirms the watch first, then cancels it as compacted; if it
    // does not within a moment, nothing was compacted.
    match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        Ok(Ok(Some(response))) if response.compact_revision() > 0 => Ok(response.compact_revision()),
        Ok(Err(e)) => Err(map_error("compact", None, e)),
        _ => Ok(1),
    }
}

/// A watch's task: registers the watch (reporting the outcome through
/// `registered`), then forwards etcd's events to `events` until the
/// receiver is dropped, re-registering after a broken stream.
async fn run_watch(
    mut client: WatchClient,
    prefix: String,
    from: Revision,
    options: EtcdOptions,
    events: mpsc::UnboundedSender<CoordResult<Event>>,
    registered: oneshot::Sender<CoordResult<()>>,
) {
    let first = tokio::time::timeout(options.request_timeout, open_watch(&mut client, &prefix, from)).await;
    let (mut stream, mut next) = match first {
        Ok(Ok((stream, revision))) => {
            // `next`: the first revision not yet delivered.
            let next = if from > 0 { from } else { revision + 1 };
            (stream, next)
        }
        Ok(Err(OpenError::Compacted(e))) => {
            // As in the embedded store: a watch whose only item is the
            // error.
            let _ = events.send(Err(e));
            let _ = registered.send(Ok(()));
            return;
        }
        Ok(Err(OpenError::Failed(e))) => {
            let _ = registered.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = registered.send(Err(CoordError::Unavailable(format!(
                "watch: etcd did not register the watch within {:?}",
                options.request_timeout
            ))));
            return;
        }
    };
    if registered.send(Ok(())).is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            () = events.closed() => return,
            message = stream.message() => message,
        };
        let broke = match message {
            Ok(Some(response)) => {
                if response.compact_revision() > 0 {
                    let _ = events.send(Err(CoordError::Compacted {
                        requested: next,
                        oldest: response.compact_revision(),
                    }));
                    return;
                }
                let mut last = None;
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = kv.mod_revision();
                    // Never repeat what an earlier stream delivered.
                    if revision < next {
                        continue;
                    }
                    let event = match event.event_type() {
                        etcd_client::EventType::Put => Event::Put(to_kv(kv)),
                        etcd_client::EventType::Delete => Event::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            revision,
                        },
                    };
                    if events.send(Ok(event)).is_err() {
                        return;
                    }
                    last = Some(revision);
                }
                // etcd sends whole revisions in one response (no
                // fragmenting asked for), so everything up to `last` is in.
                if let Some(last) = last {
                    next = last + 1;
                }
                // Cancelled for another reason than compaction (e.g. the
                // member lost its leader): register again.
                response.canceled().then(|| response.cancel_reason().to_owned())
            }
            Ok(None) => Some("etcd closed the stream".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        let Some(why) = broke else { continue };
        tracing::debug!(%prefix, next, %why, "etcd watch stream broke; registering it again");
        drop(stream);
        let reopened = tokio::select! {
            () = events.closed() => return,
            reopened = reopen_watch(&mut client, &prefix, next, &options) => reopened,
        };
        match reopened {
            Ok(reopened) => stream = reopened,
            Err(e) => {
                let _ = events.send(Err(e));
                return;
            }
        }
    }
}

/// Re-registers a broken watch from `next`, retrying with backoff (20 ms
/// doubling up to 1 s) until `options.watch_retry_limit` has passed (plus
/// at most one `request_timeout`, if etcd hangs rather than refuses).
async fn reopen_watch(client: &mut WatchClient, prefix: &str, next: Revision, options: &EtcdOptions) -> CoordResult<WatchStream> {
    let deadline = Instant::now() + options.watch_retry_limit;
    let mut pause = Duration::from_millis(20);
    loop {
        let error = match tokio::time::timeout(options.request_timeout, open_watch(client, prefix, next)).await {
            Ok(Ok((stream, _))) => return Ok(stream),
            Ok(Err(OpenError::Compacted(e))) => return Err(e),
            Ok(Err(OpenError::Failed(e))) => e,
            Err(_) => CoordError::Unavailable("watch: etcd did not register the watch in time".into()),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CoordError::Unavailable(format!(
                "watch of {prefix:?} lost and not re-established within {:?}: {error}",
                options.watch_retry_limit
            )));
        }
        // The last try is at the deadline.
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The etcd comparisons that mean `expect` for `key`. A missing key reads
/// as revision 0 in etcd, so "exists" is compared explicitly.
fn compares(key: &str, expect: Expect) -> Vec<Compare> {
    let exists = Compare::create_revision(key.to_owned(), CompareOp::Greater, 0);
    match expect {
        Expect::Absent => vec![Compare::create_revision(key.to_owned(), CompareOp::Equal, 0)],
        Expect::Value(v) => vec![exists, Compare::value(key.to_owned(), CompareOp::Equal, v)],
        Expect::ModRevision(r) => vec![exists, Compare::mod_revision(key.to_owned(), CompareOp::Equal, r)],
    }
}
