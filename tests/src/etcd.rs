//! A real etcd for the tests: [`EtcdServer`] starts `etcd` on free
//! loopback ports with its own data directory, and kills it on drop.
//!
//! The tests need the `etcd` binary on `PATH` (Debian package `etcd-server`,
//! or `scripts/install-deps`); without it they fail with a hint to install
//! it, they never skip.
//!
//! No etcd outlives its test: [`EtcdServer`]'s drop kills it (SIGKILL) and
//! waits for it, also when the test panics; and where util-linux's
//! `setpriv` exists, etcd is started with `--pdeathsig KILL` from a thread
//! that lives as long as the test process, so the kernel kills it even if
//! the test process itself is killed.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use taskgraph::coord::{Etcd, EtcdOptions};

/// How long etcd may take to become healthy (it takes ~0.1 s with the
/// test flags; the rest is slack for a loaded machine).
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// How many times [`EtcdServer::start`] tries new ports when etcd cannot
/// bind the ones it picked (another process took them in between).
const PORT_ATTEMPTS: usize = 8;

/// The flags that make etcd fast to start and lets leases be 1 s: a 10 ms
/// heartbeat and a 50 ms election timeout (minimum lease TTL
/// `ceil(1.5 × 50 ms)` → 1 s); no fsync (test data is disposable); only
/// error logs, in JSON (zap).
const TEST_FLAGS: &[&str] = &[
    "--heartbeat-interval=10",
    "--election-timeout=50",
    "--unsafe-no-fsync",
    "--logger=zap",
    "--log-level=error",
];

/// One `etcd` process (a single-member cluster) on loopback ports, with
/// its data directory under the system temp dir. Dropping it kills etcd
/// (SIGKILL), waits for it and removes the directory.
#[derive(Debug)]
pub struct EtcdServer {
    name: String,
    /// Holds `data/` and `etcd.log` (etcd's stderr, across restarts).
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it is healthy.
    ///
    /// Panics if `etcd` is missing ("run scripts/install-deps"), or, with
    /// etcd's log, if it dies or does not become healthy.
    pub fn start() -> EtcdServer {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            remove_stale_dirs();
        }
        let name = format!("tg-test-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("taskgraph-etcd-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // From here on, drop cleans up (also when a panic below unwinds).
        let mut server = EtcdServer {
            name,
            dir,
            client_port: 0,
            peer_port: 0,
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            // Bind-then-close: another process may take a port before etcd
            // binds it; etcd then exits, and we try other ports.
            let (client_port, peer_port) = free_port_pair();
            server.client_port = client_port;
            server.peer_port = peer_port;
            match server.launch() {
                Ok(()) => return server,
                Err(Launch::PortTaken) if attempt < PORT_ATTEMPTS => {
                    // A fresh data dir: the failed etcd may have written one.
                    let _ = std::fs::remove_dir_all(server.data_dir());
                }
                Err(Launch::PortTaken) => panic!("etcd could not bind free ports {PORT_ATTEMPTS} times\n{}", server.log_tail()),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// etcd's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connects an [`Etcd`] coordinator to this server (default options).
    pub async fn connect(&self) -> Etcd {
        self.connect_with(EtcdOptions::default()).await
    }

    /// Connects an [`Etcd`] coordinator to this server.
    pub async fn connect_with(&self, options: EtcdOptions) -> Etcd {
        Etcd::connect(&[self.endpoint()], options)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test etcd at {}: {e}\n{}", self.endpoint(), self.log_tail()))
    }

    /// Kills etcd (SIGKILL, as a crash) and waits for it to exit. Its data
    /// stays; [`restart`](Self::restart) starts it again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd (SIGKILL) if it runs, then starts it again on the same
    /// ports with the same data directory, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        // The ports were etcd's a moment ago; if someone grabbed one since,
        // wait a little for it to be free again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(Launch::PortTaken) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(Launch::PortTaken) => panic!(
                    "etcd could not bind its ports {} and {} again after a restart\n{}",
                    self.client_port,
                    self.peer_port,
                    self.log_tail()
                ),
            }
        }
    }

    /// The value of one of etcd's Prometheus metrics without labels (e.g.
    /// `etcd_debugging_mvcc_watcher_total`), or `None` if etcd does not
    /// answer or has no such metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.client_port, "/metrics")?;
        body.lines().find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Starts etcd on the current ports and waits until it is healthy:
    /// `PortTaken` if it exited because a port was in use; panics on any
    /// other failure.
    fn launch(&mut self) -> Result<(), Launch> {
        assert!(self.child.is_none(), "etcd is already running");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path().display()));
        let log_start = log.metadata().map_or(0, |m| m.len());
        let etcd = etcd_binary();
        let mut command = match setpriv() {
            // The kernel kills etcd when the thread that started it (the
            // spawner thread, which lives as long as the process) dies.
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(&etcd);
                command
            }
            None => Command::new(&etcd),
        };
        command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}={peer}", self.name))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.name))
            .args(TEST_FLAGS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C (or a signal to the
            // test's group) is not what stops it; drop is.
            .process_group(0);
        let child = spawn(command).unwrap_or_else(|e| {
            panic!(
                "cannot run etcd ({}: {e}); these tests need a real etcd: run scripts/install-deps \
                 (Debian/Ubuntu: `apt-get install etcd-server`)",
                etcd.display()
            )
        });
        self.child = Some(child);

        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = read_from(&self.log_path(), log_start);
                    if log.contains("address already in use") {
                        return Err(Launch::PortTaken);
                    }
                    panic!("etcd exited ({status}) before becoming healthy; its log:\n{log}");
                }
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = read_from(&self.log_path(), log_start);
                self.kill();
                panic!("etcd did not become healthy within {HEALTHY_WITHIN:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The end of etcd's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = read_from(&self.log_path(), 0);
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
        format!("--- etcd log (tail) ---\n{}", &log[start..])
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the data directories of test processes that died without
/// cleaning up (killed with SIGKILL: their etcd died with them, see the
/// module docs, but the directory stayed).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("taskgraph-etcd-tg-test-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Why [`EtcdServer::launch`] failed without panicking.
enum Launch {
    /// etcd exited because a port was in use.
    PortTaken,
}

/// The `etcd` binary: the first on `PATH`, else `/usr/bin/etcd` (Debian).
/// Panics with an install hint if there is none.
pub fn etcd_binary() -> PathBuf {
    find_on_path("etcd").unwrap_or_else(|| {
        panic!(
            "`etcd` not found on PATH; the etcd coordinator's tests need a real etcd: \
             run scripts/install-deps (Debian/Ubuntu: `apt-get install etcd-server`)"
        )
    })
}

fn setpriv() -> Option<PathBuf> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = find_on_path("setpriv")?;
            // Old util-linux versions lack --pdeathsig.
            let help = Command::new(&path).arg("--help").output().ok()?;
            String::from_utf8_lossy(&help.stdout).contains("--pdeathsig").then_some(path)
        })
        .clone()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Spawns `command` from one long-lived thread, so that `--pdeathsig`
/// (which fires when the *thread* that forked exits) fires only when the
/// whole test process ends.
fn spawn(command: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, incoming) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("etcd-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the etcd spawner thread");
        Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::channel();
    let sent = spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, reply));
    if sent.is_err() {
        return Err(std::io::Error::other("the etcd spawner thread is gone"));
    }
    answer
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the etcd spawner thread is gone")))
}

/// Two distinct free loopback ports (free when this returns; see
/// [`EtcdServer::start`] for the race).
fn free_port_pair() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    (port(&a), port(&b))
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"`
/// (which needs a leader).
fn healthy(port: u16) -> bool {
    http_get(port, "/health").is_some_and(|body| body.contains(r#""health":"true""#))
}

/// The body of etcd's answer to `GET path` on `port`, if it answered 200.
/// (HTTP/1.0, so the body is never chunked.)
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).ok()?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && !response.is_empty() => {}
        Err(_) => return None,
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.lines().next().is_some_and(|status| status.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

/// The file's content from byte `offset` on (lossy UTF-8; empty if
/// unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
