//! The end-to-end harness: real guests (compiled from `guests/` by build.rs),
//! the real `berth` binary, and a small HTTP client. Every server binds
//! 127.0.0.1 on an ephemeral port; every process is killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The guests, built from source for wasm32-wasip2.
pub mod guests {
    pub const HELLO: &str = concat!(env!("BERTH_GUESTS_DIR"), "/hello.wasm");
    pub const ECHO: &str = concat!(env!("BERTH_GUESTS_DIR"), "/echo.wasm");
    pub const MISBEHAVE: &str = concat!(env!("BERTH_GUESTS_DIR"), "/misbehave.wasm");
    /// A command component (wasi:cli/run), run to completion.
    pub const TOOL: &str = concat!(env!("BERTH_GUESTS_DIR"), "/tool.wasm");
    /// Of both worlds: served, with a `run` that ticks into /data/ticks.
    pub const WORKER: &str = concat!(env!("BERTH_GUESTS_DIR"), "/worker.wasm");
    /// examples/shop's three services.
    pub const SHOP_FRONT: &str = concat!(env!("BERTH_GUESTS_DIR"), "/shop-front.wasm");
    pub const SHOP_API: &str = concat!(env!("BERTH_GUESTS_DIR"), "/shop-api.wasm");
    pub const SHOP_STOCK: &str = concat!(env!("BERTH_GUESTS_DIR"), "/shop-stock.wasm");
    /// Built against wasi:http@0.2.0 with raw bindings.
    pub const LEGACY_HELLO: &str = concat!(env!("BERTH_GUESTS_DIR"), "/legacy_hello.wasm");
}

/// The `berth` binary of this build: `cargo test --workspace` builds it
/// before any test runs (the berth crate's own integration tests need it).
pub fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/berth
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join("berth");
    assert!(
        bin.exists(),
        "the berth binary is missing at {}: run the suite with `cargo test --workspace`",
        bin.display()
    );
    assert_fresh(&bin);
    // Containers start from it, beside berth.
    let init = bin.with_file_name("berth-init");
    if init.exists() {
        assert_fresh(&init);
    }
    bin
}

/// containerd's shim for berth, beside `berth` (`cargo test --workspace`
/// builds it: the shim crate has tests of its own).
pub fn shim_bin() -> PathBuf {
    let bin = berth_bin().with_file_name("containerd-shim-berth-v1");
    assert!(
        bin.exists(),
        "the shim binary is missing at {}: run the suite with `cargo test --workspace`",
        bin.display()
    );
    assert_fresh(&bin);
    bin
}

/// `cargo test -p berth-tests` alone does not rebuild the binary; testing a
/// stale one would report on code that is no longer there.
fn assert_fresh(bin: &Path) {
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .expect("the binary's mtime");
    let sources = built_from(bin)
        .unwrap_or_else(|| files_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")));
    let newest = sources.into_iter().max_by_key(|(_, modified)| *modified);
    if let Some((path, modified)) = newest {
        assert!(
            modified <= built,
            "{} is newer than the binary at {}: run `cargo test --workspace`, which rebuilds it",
            path.display(),
            bin.display()
        );
    }
}

/// A data dir shared by the tests of one build, so components are compiled
/// once and then come from berth's on-disk cache.
pub fn shared_home() -> PathBuf {
    let bin = berth_bin();
    let home = bin.parent().unwrap().join("berth-test-home");
    std::fs::create_dir_all(&home).expect("creating the shared test home");
    home
}

/// The sources cargo says `bin` was built from (its `.d` file beside it),
/// with their mtimes: a unit test's file is not one, and editing it does
/// not relink the binary. One that is gone counts as changed now, as cargo
/// counts it; a list none of which is found (paths relative to elsewhere)
/// is no answer.
fn built_from(bin: &Path) -> Option<Vec<(PathBuf, std::time::SystemTime)>> {
    let listed = std::fs::read_to_string(bin.with_extension("d")).ok()?;
    let (_, deps) = listed.lines().next()?.split_once(": ")?;
    // Paths are separated by spaces; a space inside one is escaped.
    let deps = deps.replace("\\ ", "\0");
    let sources: Vec<(PathBuf, Option<std::time::SystemTime>)> = deps
        .split(' ')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d.replace('\0', " ")))
        .map(|path| {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            (path, modified)
        })
        .collect();
    if sources.iter().all(|(_, modified)| modified.is_none()) {
        return None;
    }
    let now = std::time::SystemTime::now();
    Some(
        sources
            .into_iter()
            .map(|(path, modified)| (path, modified.unwrap_or(now)))
            .collect(),
    )
}

/// Every file below `dir` (recursively) with its mtime; none if it is missing.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                found.push((path, modified));
            }
        }
    }
    found.sort();
    found
}

/// A `berth` command that ran to completion.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `berth ARGS` to completion with `home` as `$BERTH_HOME`.
pub fn berth(home: &Path, args: &[&str]) -> Finished {
    berth_with(home, &[], args)
}

/// [`berth`] with more environment (`KUBECONFIG`, say).
pub fn berth_with(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Finished {
    let out = Command::new(berth_bin())
        .args(args)
        .env("BERTH_HOME", home)
        .env("BERTH_INGRESS", "127.0.0.1:0")
        .env("BERTH_INGRESS_TLS", "127.0.0.1:0")
        .env("BERTH_API_LISTEN", "127.0.0.1:0")
        // berth's commands follow a KUBECONFIG whose context is berth's:
        // the tester's own must not point them elsewhere.
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("running berth");
    Finished {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`berth_with`], with `stdin` as its standard input.
pub fn berth_input(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Finished {
    use std::io::Write as _;
    let mut child = Command::new(berth_bin())
        .args(args)
        .env("BERTH_HOME", home)
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning berth");
    // A command that never reads its input closes it early: not an error.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("waiting for berth");
    Finished {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `out`, after asserting the command succeeded (showing its output if not).
pub fn ok(out: Finished) -> Finished {
    assert!(
        out.success,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out
}

/// `berth registry serve` on a free loopback port, its storage at `root`
/// (its parent is the berth home).
pub fn registry_serve(root: &Path, extra: &[&str]) -> BerthRun {
    let mut args = vec![
        "registry",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    BerthRun::start_command(root.parent().unwrap(), &args)
}

/// A running `berth run`, killed when dropped.
pub struct BerthRun {
    child: Child,
    home: PathBuf,
    pub url: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl BerthRun {
    /// Starts `berth run COMPONENT --listen 127.0.0.1:0 ARGS…` and waits for
    /// the line that says where it listens.
    pub fn start(component: &str, args: &[&str]) -> BerthRun {
        Self::start_in(&shared_home(), component, args)
    }

    /// [`BerthRun::start`] with `home` as `$BERTH_HOME`.
    pub fn start_in(home: &Path, component: &str, args: &[&str]) -> BerthRun {
        let mut command = vec!["run", component, "--listen", "127.0.0.1:0"];
        command.extend_from_slice(args);
        Self::start_command(home, &command)
    }

    /// Starts `berth ARGS…` (a server that prints `… on http://ADDR/` once it
    /// listens) with `home` as `$BERTH_HOME`.
    pub fn start_command(home: &Path, args: &[&str]) -> BerthRun {
        Self::start_command_with(home, args, &[])
    }

    /// [`BerthRun::start_command`] with `env` set for berth too.
    pub fn start_command_with(home: &Path, args: &[&str], env: &[(&str, &str)]) -> BerthRun {
        let mut child = Command::new(berth_bin())
            .args(args)
            .envs(env.iter().copied())
            .env("BERTH_HOME", home)
            // Daemons side by side: each its own ingress and API port.
            .env("BERTH_INGRESS", "127.0.0.1:0")
            .env("BERTH_INGRESS_TLS", "127.0.0.1:0")
            .env("BERTH_API_LISTEN", "127.0.0.1:0")
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning berth");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Servers announce themselves with one `berth: …` line, ending
        // `on http://ADDR/` (or https) when they listen on TCP.
        let url = match lines.next() {
            Some(Ok(line)) if line.starts_with("berth: ") => match line.rsplit_once(" on ") {
                Some((_, url)) if url.starts_with("http://") || url.starts_with("https://") => {
                    url.trim_end_matches('/').to_owned()
                }
                _ => String::new(),
            },
            Some(Ok(line)) => panic!("unexpected first line from berth {args:?}: {line:?}"),
            _ => {
                let status = child.wait().expect("waiting for berth");
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "berth {args:?} exited ({status}) before listening; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        // Keep draining stdout so it can never block berth.
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        BerthRun {
            child,
            home: home.to_owned(),
            url,
            stderr,
            stdout,
        }
    }

    /// The berth process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the berth process has used so far (all its threads).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("reading /proc/PID/stat");
        // Fields after the parenthesised name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second: u64 = String::from_utf8(
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .expect("getconf CLK_TCK")
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }

    /// The daemon's ingress, `http://ADDR`, from the line that announces it.
    pub fn ingress(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(url) = self
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix("berth: ingress on "))
            {
                return url.trim_end_matches('/').to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no ingress line: {}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What berth printed on stdout after its listen line.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything berth logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (logs are written asynchronously).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGTERM, as a service manager would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("polling berth") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl BerthRun {
    /// SIGKILL, as a crash or the OOM killer would: no cleanup runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BerthRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        end_containers_of(&self.home);
    }
}

/// The pid of a (live) process of this host whose command line holds
/// `needle`: a container's process, found by a word in its script.
pub fn process_running(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
}

/// Ends the Linux containers a daemon of `home` left running (they outlive
/// a daemon killed with -9, for the next one to adopt), as a daemon ends
/// those no pod has: each pod's `containers` (and `berth up`'s, under
/// `up/`) handed to berth's own `abandon_all_in`.
pub fn end_containers_of(home: &Path) {
    fn pods_in(dir: &Path, depth: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "pods") {
                for pod in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    berth_linux::abandon_all_in(&pod.path().join("containers"));
                    // Their ways out outlive a killed daemon too.
                    berth_linux::network::close_outside(&pod.path().join("pasta.pid"));
                }
            } else if depth > 0 {
                pods_in(&path, depth - 1);
            }
        }
    }
    pods_in(home, 3);
}

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    request("GET", url, "").await
}

/// Sends one request with `body` and collects the reply.
/// The body of `GET url`, asked again while `wanted` says no (for 10 s at
/// most; then the last answer, for the test to say what was wrong).
pub async fn get_until(url: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(url).await.body;
        if wanted(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn request(method: &str, url: &str, body: &str) -> Reply {
    let reply = send(method, url, &[], body.as_bytes().to_vec()).await;
    Reply {
        status: reply.status,
        body: reply.text(),
    }
}

/// A response with its headers and raw body.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl RawReply {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with headers and a byte body.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> RawReply {
    let mut req = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let response = client()
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"))
        .to_bytes();
    RawReply {
        status,
        headers,
        body,
    }
}

/// A loopback HTTP server that answers `hello from upstream` and counts
/// connections and requests.
pub struct Upstream {
    pub port: u16,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"hello from upstream"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            port,
            hits,
            connections,
            _task: task,
        }
    }

    /// Requests served.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// TCP connections accepted, whether or not they sent a request.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The CNCF distribution registry (Debian's `docker-registry`) on a free
/// loopback port with its own storage, killed when dropped.
pub struct DockerRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    pub fn start() -> DockerRegistry {
        let dir = tempfile::tempdir().expect("a temp dir");
        let host = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("writing the registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "docker-registry is required for this test (Debian package `docker-registry`; .ci/run installs it)",
            );
        assert!(
            wait_for_port(&host, Duration::from_secs(10)),
            "docker-registry did not listen on {host}"
        );
        DockerRegistry {
            child,
            host,
            _dir: dir,
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Helpers for tests that drive the daemon: manifests, images, pods.
/// A client load as strict as wrk: connections that each send keep-alive
/// requests back to back, and count as a failure any request that does not
/// get a whole 200 (a refused, reset or closed connection included). A
/// connection the server says `Connection: close` on is opened again.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadCount>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadCount {
    pub ok: u64,
    pub failed: Vec<String>,
    pub slowest: Duration,
}

impl Load {
    /// `connections` clients of `address` asking for `/` with `host`.
    pub fn start(address: &str, host: &str, connections: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let threads = (0..connections)
            .map(|_| {
                let (stop, request, address) = (stop.clone(), request.clone(), address.to_owned());
                std::thread::spawn(move || {
                    let mut count = LoadCount::default();
                    let mut connection: Option<BufReader<std::net::TcpStream>> = None;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = Instant::now();
                        match Self::one(&mut connection, &address, &request) {
                            Ok(()) => count.ok += 1,
                            Err(e) => {
                                connection = None;
                                count.failed.push(e);
                            }
                        }
                        count.slowest = count.slowest.max(started.elapsed());
                    }
                    count
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn one(
        connection: &mut Option<BufReader<std::net::TcpStream>>,
        address: &str,
        request: &str,
    ) -> Result<(), String> {
        use std::io::Write as _;
        if connection.is_none() {
            let stream =
                std::net::TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            *connection = Some(BufReader::new(stream));
        }
        let reader = connection.as_mut().unwrap();
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut status = String::new();
        reader
            .read_line(&mut status)
            .map_err(|e| format!("read: {e}"))?;
        if status.is_empty() {
            return Err("the connection closed before an answer".into());
        }
        let (mut length, mut close, mut chunked) = (0usize, false, false);
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("content-length:") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad length: {line}"))?;
            }
            close |= line == "connection: close";
            chunked |= line == "transfer-encoding: chunked";
        }
        let mut body = vec![0u8; length];
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        while chunked {
            let mut size = String::new();
            reader
                .read_line(&mut size)
                .map_err(|e| format!("read: {e}"))?;
            let size = usize::from_str_radix(size.trim_end(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            // The chunk and its CRLF; the last (empty) one ends the body.
            let mut chunk = vec![0u8; size + 2];
            reader
                .read_exact(&mut chunk)
                .map_err(|e| format!("read body: {e}"))?;
            body.extend_from_slice(&chunk[..size]);
            chunked = size > 0;
        }
        if close {
            *connection = None;
        }
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{}: {}",
                status.trim_end(),
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }

    /// Stops, and sums what each connection saw.
    pub fn stop(self) -> LoadCount {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = LoadCount::default();
        for thread in self.threads {
            let count = thread.join().expect("a load thread panicked");
            total.ok += count.ok;
            total.failed.extend(count.failed);
            total.slowest = total.slowest.max(count.slowest);
        }
        total
    }
}

pub mod kube {
    use std::path::Path;

    /// Whether a pod (as `get pods -o json` lists it) has Ready=True.
    pub fn is_ready(pod: &serde_json::Value) -> bool {
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    }

    pub fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The pods as `get pods -o json` shows them.
    pub fn pods(home: &Path) -> Vec<serde_json::Value> {
        let out = crate::ok(crate::berth(home, &["get", "pods", "-A", "-o", "json"]));
        let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until a pod satisfies `done` (the tests using it run one pod
    /// at a time, or name it); returns it.
    pub fn wait_for_pod(
        home: &Path,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(pod) = pods(home).into_iter().find(&done) {
                return pod;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {:#?}",
                pods(home)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The pod named `name`, once `done` says so.
    pub fn wait_for_named(
        home: &Path,
        name: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for_pod(home, name, |p| p["metadata"]["name"] == name && done(p))
    }

    /// Waits until exactly `n` pods are Ready; returns (name, endpoint) of each.
    pub fn wait_ready(home: &Path, n: usize) -> Vec<(String, String)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let pods = pods(home);
            let ready: Vec<(String, String)> = pods
                .iter()
                .filter(|p| is_ready(p))
                .map(|p| {
                    (
                        p["metadata"]["name"].as_str().unwrap().to_owned(),
                        p["status"]["endpoints"]
                            [p["spec"]["containers"][0]["name"].as_str().unwrap()]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    )
                })
                .collect();
            if pods.len() == n && ready.len() == n {
                return ready;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wanted {n} ready pods, have {} of {}: {pods:#?}",
                ready.len(),
                pods.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `berth apply -f` of `text`, asserting success.
    pub fn apply(home: &Path, text: &str) {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "app.yaml", text);
        crate::ok(crate::berth(home, &["apply", "-f", &file]));
    }

    /// `kubectl` (the Debian package's, or `binary`'s) with the daemon's
    /// kubeconfig in `home` and a discovery cache of its own there.
    pub fn kubectl_as(binary: &str, home: &Path, args: &[&str]) -> crate::Finished {
        let cache = home.join("kube-cache");
        let out = std::process::Command::new(binary)
            .arg("--kubeconfig")
            .arg(home.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", &cache)
            .output()
            .unwrap_or_else(|e| panic!("{binary} is needed (Debian package kubectl): {e}"));
        crate::Finished {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn kubectl(home: &Path, args: &[&str]) -> crate::Finished {
        kubectl_as("kubectl", home, args)
    }

    /// Builds `component` (a file) as image `tag` in `home`.
    pub fn build_image(home: &Path, component: &Path, tag: &str) {
        let app = tempfile::tempdir().unwrap();
        std::fs::copy(component, app.path().join("app.wasm")).unwrap();
        std::fs::write(app.path().join("berth.toml"), "component = \"app.wasm\"\n").unwrap();
        crate::ok(crate::berth(
            home,
            &["build", app.path().to_str().unwrap(), "-t", tag],
        ));
    }
}

/// A small Linux image made here: Debian's static busybox with its applets
/// as symlinks, an /etc/passwd, and a config running `sh`.
pub mod busybox {
    use sha2::Digest as _;
    use std::path::Path;

    /// The applets the tests use.
    const APPLETS: &[&str] = &[
        "sh", "echo", "cat", "hostname", "ls", "sleep", "httpd", "ps", "id", "mkdir", "true",
        "false", "head", "dd", "ip", "wc", "trap", "kill", "seq", "grep", "env", "yes", "tail",
        "readlink", "stat", "touch", "rm", "mount", "test", "mknod", "nc", "wget", "printf",
    ];

    fn busybox_binary() -> Vec<u8> {
        std::fs::read("/bin/busybox").expect(
            "/bin/busybox is required for this test (Debian package busybox-static; \
             tests/prepare.sh installs it)",
        )
    }

    fn add_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data).unwrap();
    }

    fn add_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Directory);
        tar.append_data(&mut header, path, std::io::empty())
            .unwrap();
    }

    /// The layer: busybox, its applets, /etc, /tmp, /www with an index page.
    pub fn layer() -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for dir in ["bin/", "etc/", "www/"] {
            add_dir(&mut tar, dir, 0o755);
        }
        add_dir(&mut tar, "tmp/", 0o1777);
        add_file(&mut tar, "bin/busybox", 0o755, &busybox_binary());
        for applet in APPLETS {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o777);
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
                .unwrap();
        }
        add_file(
            &mut tar,
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        );
        add_file(
            &mut tar,
            "etc/group",
            0o644,
            b"root:x:0:\nnogroup:x:65534:\n",
        );
        add_file(&mut tar, "www/index.html", 0o644, b"hello from busybox\n");
        tar.into_inner().unwrap()
    }

    /// A layer of this machine's `binaries` and the shared libraries
    /// they load (by `ldd`), each at its path here: a real program in an
    /// image without building one.
    pub fn host_binaries_layer(binaries: &[&str]) -> Vec<u8> {
        let mut files = std::collections::BTreeSet::new();
        for binary in binaries {
            files.insert(binary.to_string());
            let ldd = std::process::Command::new("ldd")
                .arg(binary)
                .output()
                .expect("ldd (Debian package libc-bin)");
            for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                let path = match line.split_once("=>") {
                    Some((_, after)) => after.split_whitespace().next(),
                    None => line.split_whitespace().next(),
                };
                if let Some(path) = path.filter(|p| p.starts_with('/')) {
                    files.insert(path.to_owned());
                }
            }
        }
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        add_dir(&mut tar, "tmp/", 0o1777);
        for file in &files {
            let relative = file.trim_start_matches('/');
            let mut parent = Path::new(relative).parent();
            let mut missing = Vec::new();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                if dirs.insert(dir.to_owned()) {
                    missing.push(dir.to_owned());
                }
                parent = dir.parent();
            }
            for dir in missing.iter().rev() {
                add_dir(&mut tar, &format!("{}/", dir.display()), 0o755);
            }
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            add_file(&mut tar, relative, 0o755, &data);
        }
        tar.into_inner().unwrap()
    }

    fn digest(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
    }

    /// An OCI archive of an image of `layers` (tar) and `config` (the
    /// config's `config` object), tagged `name`.
    pub fn archive(layers: &[Vec<u8>], config: serde_json::Value, name: &str) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(&config),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest(l),
                "size": l.len(),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(&manifest),
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }],
        }))
        .unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        add_file(
            &mut tar,
            "oci-layout",
            0o644,
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        add_file(&mut tar, "index.json", 0o644, &index);
        for blob in layers.iter().chain([&config, &manifest]) {
            let path = format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]);
            add_file(&mut tar, &path, 0o644, blob);
        }
        tar.into_inner().unwrap()
    }

    /// Loads the busybox image as `name` into `home`'s store.
    pub fn load(home: &Path, name: &str) {
        let archive = archive(
            &[layer()],
            serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
            name,
        );
        load_archive(home, &archive);
    }

    pub fn load_archive(home: &Path, archive: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.tar");
        std::fs::write(&path, archive).unwrap();
        crate::ok(crate::berth(home, &["load", "-i", path.to_str().unwrap()]));
    }
}
