//! What the cluster tests run besides tally: their own `redis-server` and
//! nginx on free ports (so a test can kill and restart them), and tally
//! nodes joined through them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildServer, WAIT};

/// The API key every test node takes, so the tests can read conversations.
pub const API_KEY: &str = "cluster-test-api-key-0123456789";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program the cluster tests need, found or a loud failure naming the
/// package (scripts/test installs them in CI).
fn program(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: the cluster tests need it (apt-get install {package})");
}

/// A `redis-server` of the test's own, keeping nothing on disk.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut redis = RedisServer {
            child: None,
            port: free_port(),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, empty) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(program("redis-server", "redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// SIGKILL: no goodbye to its clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nginx running `deploy/nginx.conf` over the given nodes, on a free port.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The site file with its node list and its port replaced, inside a
    /// minimal main configuration of the test's own.
    pub fn start(nodes: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap();
        let servers: String = nodes
            .iter()
            .map(|url| {
                let address = url.trim_start_matches("http://").trim_end_matches('/');
                format!("    server {address} max_fails=1 fail_timeout=5s;\n")
            })
            .collect();
        let (before, rest) = site.split_once("    # nodes:").expect("a nodes block");
        let (_, after) = rest.split_once("    # end of nodes\n").expect("its end");
        assert!(after.contains("listen 80;"), "the site listens on 80");
        let site = format!("{before}{servers}{after}")
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.path().join("tally.conf"), site).unwrap();
        let root = dir.path().display();
        // Running as root, the workers need a user: root keeps the
        // temporary directories writable.
        let user = if running_as_root() { "user root;" } else { "" };
        let main = format!(
            "{user}\nworker_processes 1;\nerror_log {root}/error.log warn;\npid {root}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
             fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
             include {root}/tally.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let child = Command::new(program("nginx", "nginx"))
            .args(["-p", &root.to_string(), "-c"])
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            // Not the test's own output: the workers would hold it open
            // after the test. Complaints go to error.log.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let log = dir.path().join("error.log");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within {WAIT:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    /// SIGTERM, nginx's fast shutdown: the master stops its workers too
    /// (after SIGKILL they would outlive it).
    fn drop(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        self.child.wait().ok();
    }
}

/// Whether the tests run as root (CI does), read from `/proc` rather than
/// through libc.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// One tally node of a cluster on `database` and `redis`, with fast
/// heartbeats so the tests do not wait long, and `extra` variables on top.
pub fn node(database: &str, redis: &str, extra: &[(&str, &str)]) -> ChildServer {
    let mut envs = vec![
        ("TALLY_ADDR", "127.0.0.1:0"),
        ("TALLY_DATABASE_URL", database),
        ("TALLY_REDIS_URL", redis),
        ("TALLY_FLUSH_INTERVAL", "100ms"),
        ("TALLY_HEARTBEAT_INTERVAL", "200ms"),
        ("TALLY_PEER_TIMEOUT", "1s"),
        ("TALLY_API_KEY", API_KEY),
        ("TALLY_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    envs.extend_from_slice(extra);
    ChildServer::start(&[], &envs)
}

/// A JSON document of a node's API, with the test key.
pub async fn api(url: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One sample of a node's `/metrics`.
pub async fn metric(url: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Asks `check` until it answers `Some`, for at most `WAIT` (what other
/// nodes know arrives over Redis, with nothing to wait on but the
/// answer itself); fails with the last answer's description.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} not within {WAIT:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}
