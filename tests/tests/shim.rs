//! berth images under a real containerd (Debian's 1.6), through berth's
//! shim, `containerd-shim-berth-v1`: each test starts its own containerd
//! (temporary root, state and sockets) with the shim on its PATH, imports an
//! image `berth build` made and `berth save` wrote, and drives it with ctr.
//! The network namespaces are the test's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{berth, berth_input, guests, ok, registry_serve, shim_bin};

/// A containerd of the test's own, stopped and cleaned up on drop.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is required for this test (Debian package containerd for containerd and ctr, \
         iproute2 for ip; tests/prepare.sh installs them)"
    );
}

impl Containerd {
    fn start() -> Containerd {
        for tool in ["containerd", "ctr", "ip", "curl"] {
            require(tool);
        }
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "containerd's tests run as root"
        );
        // Unix socket paths are short: a directory right under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("berth-ctd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n"
            ),
        )
        .unwrap();
        let shim_dir = shim_bin().parent().unwrap().to_owned();
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("PATH", path)
            // Components compiled once for every test's shims.
            .env("BERTH_SHIM_CACHE", shim_dir.join("berth-shim-cache"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.address())
            .args(args)
            .output()
            .expect("running ctr")
    }

    /// `ctr ARGS`, which must succeed; its stdout.
    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}\ncontainerd's log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Builds an image of `component` with berth, saves it, and imports it
    /// as `name` (all platforms: ctr keeps only the host's otherwise).
    fn import(&self, component: &str, name: &str) {
        let home = tempfile::tempdir().unwrap();
        build_image(home.path(), component, name);
        let archive = home.path().join("image.tar");
        ok(berth(
            home.path(),
            &["save", name, "-o", archive.to_str().unwrap()],
        ));
        self.ctr_ok(&[
            "image",
            "import",
            "--all-platforms",
            archive.to_str().unwrap(),
        ]);
    }

    /// Imports the tests' busybox image as `busybox:1` (its archive
    /// written in `dir`).
    fn import_busybox(&self, dir: &Path) {
        let archive = dir.join("busybox.tar");
        std::fs::write(
            &archive,
            berth_tests::busybox::archive(
                &[berth_tests::busybox::layer()],
                serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
                "busybox:1",
            ),
        )
        .unwrap();
        self.ctr_ok(&["image", "import", archive.to_str().unwrap()]);
    }

    /// Shims serving this containerd still alive.
    fn shims(&self) -> Vec<u32> {
        let address = self.address();
        let address = address.to_str().unwrap();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim-berth-v1") && c.contains(address)
                })
            })
            .collect()
    }

    /// Waits for every shim of this containerd to have exited.
    fn wait_no_shims(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shims().is_empty() {
            assert!(Instant::now() < deadline, "shims left: {:?}", self.shims());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for task `id` to say `status` in `ctr task ls`.
    fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tasks = self.ctr_ok(&["task", "ls"]);
            if tasks
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains(status))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never {status}: {tasks}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr task rm` of a stopped task; the task's exit status, which ctr
    /// 1.6 only states in a warning when it is not 0.
    fn remove_task(&self, id: &str) -> u32 {
        let out = self.ctr(&["task", "rm", id]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ctr task rm {id}: {said}");
        said.split_once("exit with non-zero exit code ")
            .map_or(0, |(_, code)| {
                let digits: String = code.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for line in self.ctr_ok(&["task", "ls", "-q"]).lines() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", line]);
            let _ = self.ctr(&["task", "rm", "-f", line]);
        }
        for line in self.ctr_ok(&["container", "ls", "-q"]).lines() {
            let _ = self.ctr(&["container", "rm", line]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.shims() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // Snapshots a crashed test left mounted would keep the directory.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root = self.dir.path().to_str().unwrap().to_owned();
        for mount in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if mount.starts_with(&root) {
                let _ = Command::new("umount").args(["-l", mount]).status();
            }
        }
        // The parent of the Linux containers' cgroups (ctr's cgroupsPath is
        // /NAMESPACE/ID): removed once empty, which it is not while another
        // test's container is in it.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount_point in mountinfo
            .lines()
            .filter(|l| l.contains(" - cgroup"))
            .filter_map(|l| l.split(' ').nth(4))
        {
            let _ = std::fs::remove_dir(Path::new(mount_point).join("default"));
        }
    }
}

/// `berth build` of `component` with a bundle at /static, in `home`.
fn build_image(home: &Path, component: &str, name: &str) {
    let app = home.join("app");
    std::fs::create_dir_all(app.join("static")).unwrap();
    std::fs::write(app.join("static/hello.txt"), "bundled hello").unwrap();
    std::fs::write(
        app.join("berth.toml"),
        format!(
            "component = \"{component}\"\n[[files]]\nsource = \"static\"\nmount = \"/static\"\n"
        ),
    )
    .unwrap();
    ok(berth(home, &["build", "-t", name, app.to_str().unwrap()]));
}

/// A CA of the test's own and a serving certificate for 127.0.0.1 it
/// signed, as PEM files in `dir`: (ca.crt, tls.crt, tls.key) named `NAME-…`.
fn certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert_pem = params.signed_by(&key, &issuer).unwrap().pem();
    let paths = (
        dir.join(format!("{name}-ca.crt")),
        dir.join(format!("{name}-tls.crt")),
        dir.join(format!("{name}-tls.key")),
    );
    std::fs::write(&paths.0, ca_pem).unwrap();
    std::fs::write(&paths.1, cert_pem).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Waits (10 s at most) for the file at `path` (a task's log) to hold
/// `needle`.
fn wait_for_line(path: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {}: {:?}",
            path.display(),
            std::fs::read_to_string(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace of the test's own, with its loopback up.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("berth-shim-{}-{}", std::process::id(), fastrand());
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(status.is_ok_and(|s| s.success()), "ip netns add {name}");
        let status = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        assert!(status.is_ok_and(|s| s.success()));
        Netns { name }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `curl URL` from inside the namespace: (status, body).
    fn curl(&self, url: &str) -> (u16, String) {
        curl_in(&self.name, url)
    }
}

/// `curl URL` from inside the network namespace `name`: (status, body).
fn curl_in(name: &str, url: &str) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", name, "curl", "-s", "-m", "10"])
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn fastrand() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

const RUN: [&str; 5] = [
    "run",
    "--platform",
    "wasip2/wasm",
    "--runtime",
    "io.containerd.berth.v1",
];

#[test]
fn an_http_component_serves_in_the_network_namespace_containerd_gives_it() {
    let containerd = Containerd::start();
    containerd.import(guests::MISBEHAVE, "misbehave:1");
    let netns = Netns::new();
    let log = containerd.dir.path().join("web.log");
    let with_ns = format!("network:{}", netns.path());
    // The pod's own /etc/hosts names a host the host's does not.
    let hosts = containerd.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 upstream.pod.test\n").unwrap();
    let hosts_mount = format!(
        "type=bind,src={},dst=/etc/hosts,options=rbind:ro",
        hosts.display()
    );
    let log_uri = format!("file://{}", log.display());
    let mut args = RUN.to_vec();
    args.extend([
        "-d",
        "--with-ns",
        &with_ns,
        "--log-uri",
        &log_uri,
        "--memory-limit",
        "67108864",
        "--env",
        "BERTH_LISTEN=9000",
        "--mount",
        &hosts_mount,
        "--annotation",
        "berth.dev/allow-outbound=127.0.0.1:9000,upstream.pod.test:9000",
        "misbehave:1",
        "web",
        "/misbehave.wasm",
    ]);
    containerd.ctr_ok(&args);
    containerd.wait_status("web", "RUNNING");

    // It answers inside the namespace it was given, and nowhere else.
    let deadline = Instant::now() + Duration::from_secs(30);
    while netns.curl("http://127.0.0.1:9000/").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the component never answered: {}",
            containerd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(netns.curl("http://127.0.0.1:9000/"), (200, "ok\n".into()));
    assert!(
        std::net::TcpStream::connect("127.0.0.1:9000").is_err(),
        "the host's loopback must not reach the task"
    );
    // The image's files are its root, read-only bundles included.
    let (status, body) = netns.curl("http://127.0.0.1:9000/exists?path=/static/hello.txt");
    assert_eq!(status, 200, "{body}");

    // Past the memory limit one request fails; the task lives on.
    let (status, _) = netns.curl("http://127.0.0.1:9000/alloc?mb=100");
    assert_eq!(status, 500);
    assert_eq!(netns.curl("http://127.0.0.1:9000/").0, 200);
    let (status, body) = netns.curl("http://127.0.0.1:9000/alloc?mb=8");
    assert_eq!((status, body.as_str()), (200, "allocated 8 MiB\n"));

    // Outbound: the annotation's host (its own port, in the namespace) is
    // allowed, any other denied with the reason in the shim's log.
    let (status, body) = netns.curl("http://127.0.0.1:9000/fetch?url=http://127.0.0.1:9000/");
    assert_eq!(
        (status, body.as_str()),
        (200, "fetched http://127.0.0.1:9000/: 200 OK: ok\n")
    );
    // A name from the pod's /etc/hosts resolves as it would in the pod.
    let (status, body) =
        netns.curl("http://127.0.0.1:9000/fetch?url=http://upstream.pod.test:9000/");
    assert_eq!(
        (status, body.as_str()),
        (200, "fetched http://upstream.pod.test:9000/: 200 OK: ok\n")
    );
    let (status, _) = netns.curl("http://127.0.0.1:9000/fetch?url=http://127.0.0.1:9001/");
    assert_eq!(status, 502);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containerd.log().contains("denied outbound request") {
        assert!(Instant::now() < deadline, "{}", containerd.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A trap fails its request and is in the task's log (containerd's fifos).
    assert_eq!(netns.curl("http://127.0.0.1:9000/trap").0, 500);
    wait_for_line(&log, "guest asked to trap");

    // ctr sees it as any task.
    let metrics = containerd.ctr_ok(&["task", "metrics", "web"]);
    assert!(metrics.contains("cpuacct.usage"), "{metrics}");
    let pids = containerd.ctr_ok(&["task", "ps", "web"]);
    assert!(pids.lines().count() >= 2, "{pids}");

    // SIGTERM lets the request in flight finish, then ends it with 0.
    let slow = {
        let name = netns.name.clone();
        std::thread::spawn(move || curl_in(&name, "http://127.0.0.1:9000/sleep?ms=1500"))
    };
    std::thread::sleep(Duration::from_millis(300));
    containerd.ctr_ok(&["task", "kill", "web"]);
    assert_eq!(slow.join().unwrap(), (200, "slept 1500 ms\n".into()));
    containerd.wait_status("web", "STOPPED");
    assert_eq!(containerd.remove_task("web"), 0);
    containerd.ctr_ok(&["container", "rm", "web"]);

    // Nothing left: no shim, no mount.
    containerd.wait_no_shims();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = containerd.dir.path().to_str().unwrap();
    assert!(!mounts.contains(root), "{mounts}");
}

#[test]
fn a_command_component_runs_to_its_exit_status_with_what_the_spec_grants() {
    let containerd = Containerd::start();
    containerd.import(guests::TOOL, "tool:1");
    let run = |extra: &[&str], id: &str, argv: &[&str]| {
        let mut args = RUN.to_vec();
        args.push("--rm");
        args.extend(extra);
        args.extend(["tool:1", id]);
        args.extend(argv);
        containerd.ctr(&args)
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // argv from the spec, the component first; output through the fifos.
    let out = run(&[], "args", &["/tool.wasm", "args", "a", "b"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/tool.wasm args a b\n"
    );

    let out = run(
        &["--env", "GREETING=hi"],
        "env",
        &["/tool.wasm", "env", "GREETING"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "GREETING=hi\n",
        "{}",
        text(&out)
    );

    // Bind mounts are its directories, read-only where the mount says so.
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("in.txt"), "from the host").unwrap();
    let mount = |mode: &str| {
        format!(
            "type=bind,src={},dst=/data,options=rbind:{mode}",
            shared.path().display()
        )
    };
    let ro = mount("ro");
    let out = run(
        &["--mount", &ro],
        "read",
        &["/tool.wasm", "read", "/data/in.txt"],
    );
    // Output is written a line at a time: the last one gets its newline.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from the host\n",
        "{}",
        text(&out)
    );
    let out = run(
        &["--mount", &ro],
        "ro",
        &["/tool.wasm", "write", "/data/out.txt", "x"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!shared.path().join("out.txt").exists());
    let rw = mount("rw");
    let out = run(
        &["--mount", &rw],
        "rw",
        &["/tool.wasm", "write", "/data/out.txt", "x"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(shared.path().join("out.txt")).unwrap(),
        "x"
    );

    // A crash: a non-zero status, and the reason in its output.
    let out = run(&[], "panic", &["/tool.wasm", "panic"]);
    assert_eq!(out.status.code(), Some(134), "{}", text(&out));
    assert!(text(&out).contains("berth: trapped"), "{}", text(&out));

    // A path climbing out of the image stays in it: not a component
    // there, it is the Linux backend's to run, which finds no such program
    // in the image's root (the host's /etc/passwd is not reached).
    let out = run(&[], "escape", &["/../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(
        text(&out).contains("/../../etc/passwd: No such file"),
        "{}",
        text(&out)
    );

    // SIGKILL ends a running command at once: 137.
    let mut args = RUN.to_vec();
    args.extend(["-d", "tool:1", "sleeper", "/tool.wasm", "sleep", "600000"]);
    containerd.ctr_ok(&args);
    containerd.wait_status("sleeper", "RUNNING");
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "sleeper"]);
    containerd.wait_status("sleeper", "STOPPED");
    assert_eq!(containerd.remove_task("sleeper"), 137);
    containerd.ctr_ok(&["container", "rm", "sleeper"]);
}

#[test]
fn a_component_of_both_worlds_given_arguments_serves_until_its_run_ends() {
    let containerd = Containerd::start();
    containerd.import(guests::WORKER, "worker:1");
    let netns = Netns::new();
    let with_ns = format!("network:{}", netns.path());
    let data = tempfile::tempdir().unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.path().display()
    );
    // A task `id` of the worker, in the namespace, with /data, given `run`'s
    // arguments TICKS MS CODE.
    let start = |id: &str, worker: [&str; 3]| {
        let mut args = RUN.to_vec();
        args.extend(["-d", "--with-ns", &with_ns, "--mount", &mount]);
        args.extend(["worker:1", id, "/worker.wasm"]);
        args.extend(worker);
        containerd.ctr_ok(&args);
    };
    start("both", ["60", "50", "3"]);
    // Served (on the default port) while its `run` ticks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = netns.curl("http://127.0.0.1:8080/");
        if status == 200 && body != "ticks: none\n" {
            assert!(body.starts_with("ticks: "), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served with its run going: {status} {body} {}",
            containerd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The task is its `run`: it ends with it, with its status.
    containerd.wait_status("both", "STOPPED");
    assert_eq!(containerd.remove_task("both"), 1);
    assert_eq!(
        std::fs::read_to_string(data.path().join("ticks")).unwrap(),
        "60"
    );
    containerd.ctr_ok(&["container", "rm", "both"]);

    // Asked to stop while its `run` goes on: ended as a command is (143).
    start("stopped", ["100000", "50", "0"]);
    containerd.wait_status("stopped", "RUNNING");
    containerd.ctr_ok(&["task", "kill", "stopped"]);
    containerd.wait_status("stopped", "STOPPED");
    assert_eq!(containerd.remove_task("stopped"), 143);
    containerd.ctr_ok(&["container", "rm", "stopped"]);
}

#[test]
fn the_shim_refuses_what_it_cannot_run_and_is_gone_after() {
    let containerd = Containerd::start();
    containerd.import(guests::TOOL, "tool:1");
    // A component given a listen address that is none is refused at start.
    let mut args = RUN.to_vec();
    args.extend(["--rm", "--env", "BERTH_LISTEN=nowhere", "tool:1", "refused"]);
    args.push("/tool.wasm");
    let out = containerd.ctr(&args);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("BERTH_LISTEN=\"nowhere\""), "{said}");
    // Stopped (with the status of a failed start), so `--rm` removed it.
    assert_eq!(containerd.ctr_ok(&["task", "ls", "-q"]), "");
    assert_eq!(containerd.ctr_ok(&["container", "ls", "-q"]), "");
    // A file that is not a component is the Linux backend's to run: it
    // cannot be executed, and the task ends 127 saying why.
    let mut args = RUN.to_vec();
    args.extend(["--rm", "tool:1", "missing", "/static/hello.txt"]);
    let out = containerd.ctr(&args);
    assert_eq!(out.status.code(), Some(127));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("exec /static/hello.txt"), "{said}");
    assert_eq!(containerd.ctr_ok(&["task", "ls", "-q"]), "");
    assert_eq!(containerd.ctr_ok(&["container", "ls", "-q"]), "");
    containerd.wait_no_shims();
}

#[test]
fn containerd_pulls_a_berth_image_over_https_from_berth_s_registry() {
    let containerd = Containerd::start();
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), guests::HELLO, "hello:1");
    let root = home.path().join("registry");

    // Pushed over plain HTTP (loopback), then the same storage served over
    // HTTPS with a certificate from a CA of the test's own.
    {
        let registry = registry_serve(&root, &[]);
        let remote = format!("{}/hello:1", registry.url.trim_start_matches("http://"));
        ok(berth(home.path(), &["tag", "hello:1", &remote]));
        ok(berth(home.path(), &["push", &remote]));
    }
    let (ca, cert, key) = certificates(home.path(), "first");
    let registry = registry_serve(
        &root,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(registry.url.starts_with("https://"), "{}", registry.url);
    let remote = format!("{}/hello:1", registry.url.trim_start_matches("https://"));

    // ctr speaks plain HTTP to loopback registries unless a hosts.toml
    // (containerd's registry configuration) says HTTPS, with which CA.
    let host = remote.split('/').next().unwrap().to_owned();
    let hosts = home.path().join("hosts");
    std::fs::create_dir_all(hosts.join(&host)).unwrap();
    let pull = |ca: &Path| {
        std::fs::write(
            hosts.join(&host).join("hosts.toml"),
            format!(
                "server = \"https://{host}\"\n[host.\"https://{host}\"]\n  ca = \"{}\"\n  \
                 capabilities = [\"pull\", \"resolve\"]\n",
                ca.display()
            ),
        )
        .unwrap();
        containerd.ctr(&[
            "image",
            "pull",
            "--platform",
            "wasip2/wasm",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            &remote,
        ])
    };
    let out = pull(&ca);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // berth's own client trusts a registry's CA from `certs.d` (Docker's
    // layout), and then speaks HTTPS to it even on loopback.
    let other = tempfile::tempdir().unwrap();
    let refused = berth(other.path(), &["pull", &remote]);
    assert!(!refused.success, "{}", refused.stdout);
    let certs = other.path().join("certs.d").join(&host);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    ok(berth(other.path(), &["pull", &remote]));
    let pushed = format!("{host}/pushed:1");
    ok(berth(other.path(), &["tag", &remote, &pushed]));
    ok(berth(other.path(), &["push", &pushed]));

    // What containerd pulled runs.
    let netns = Netns::new();
    let with_ns = format!("network:{}", netns.path());
    let mut args = RUN.to_vec();
    args.extend(["-d", "--with-ns", &with_ns, &remote, "hello", "/hello.wasm"]);
    containerd.ctr_ok(&args);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = netns.curl("http://127.0.0.1:8080/there");
        if status == 200 {
            assert_eq!(body, "hello from /there\n");
            break;
        }
        assert!(Instant::now() < deadline, "{}", containerd.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A renewed certificate (from another CA here) is served without a
    // restart: the old CA no longer verifies, the new one does.
    let (ca2, cert2, key2) = certificates(home.path(), "second");
    std::fs::rename(&key2, &key).unwrap();
    std::fs::rename(&cert2, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pull(&ca2).status.success() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!pull(&ca).status.success());
    drop(registry);

    // With credentials as well: the token realm a TLS registry names is
    // https, so a login and a push go through.
    let htpasswd = home.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("wonderland", 4).unwrap()),
    )
    .unwrap();
    let guarded = registry_serve(
        &home.path().join("guarded"),
        &[
            "--auth",
            htpasswd.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let guarded_host = guarded.url.trim_start_matches("https://").to_owned();
    let certs = other.path().join("certs.d").join(&guarded_host);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca2, certs.join("ca.crt")).unwrap();
    let target = format!("{guarded_host}/team/hello:1");
    ok(berth(other.path(), &["tag", &remote, &target]));
    assert!(!berth(other.path(), &["push", &target]).success);
    ok(berth_input(
        other.path(),
        &["login", &guarded_host, "-u", "alice", "--password-stdin"],
        &[],
        "wonderland\n",
    ));
    ok(berth(other.path(), &["push", &target]));
}

#[test]
fn a_task_given_no_network_namespace_gets_its_own_with_loopback_up() {
    let containerd = Containerd::start();
    containerd.import(guests::HELLO, "hello:1");
    // No --with-ns: the spec asks for a new network namespace.
    let mut args = RUN.to_vec();
    args.extend(["-d", "hello:1", "own", "/hello.wasm"]);
    containerd.ctr_ok(&args);
    containerd.wait_status("own", "RUNNING");
    let shim = containerd.shims()[0];
    let own = std::fs::read_link(format!("/proc/{shim}/ns/net")).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(own, ours, "the task serves in the host's network");
    // Reachable on its loopback from inside that namespace, as with runc.
    let curl = || {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{shim}/ns/net"))
            .args(["curl", "-s", "-m", "5", "http://127.0.0.1:8080/inside"])
            .output()
            .expect("nsenter (util-linux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl() != "hello from /inside\n" {
        assert!(Instant::now() < deadline, "{}", containerd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "own"]);
    containerd.wait_status("own", "STOPPED");
    assert_eq!(containerd.remove_task("own"), 137);
}

/// The PID column of task `id` in `ctr task ls`.
fn task_pid(containerd: &Containerd, id: &str) -> u32 {
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    tasks
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid for {id}: {tasks}"))
}

/// A kernel object's identity (a namespace's inode).
fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

#[test]
fn a_pod_s_sandbox_and_its_wasm_and_linux_containers_share_one_shim_and_network() {
    let containerd = Containerd::start();
    containerd.import(guests::HELLO, "hello:1");
    let dir = tempfile::tempdir().unwrap();
    containerd.import_busybox(dir.path());
    // The pod's network namespace, as CNI would have made it for the CRI.
    let netns = Netns::new();
    let pod = |kind: &'static str| {
        [
            "--annotation",
            match kind {
                "sandbox" => "io.kubernetes.cri.container-type=sandbox",
                _ => "io.kubernetes.cri.container-type=container",
            },
            "--annotation",
            "io.kubernetes.cri.sandbox-id=pod1",
        ]
    };
    let linux_run = ["run", "--runtime", "io.containerd.berth.v1", "-d"];

    // The sandbox, as CRI starts the pause container: a Linux image in
    // the pod's namespace, with the runtime handler of the pod. Busybox
    // stands in for pause (no registry here), ending on SIGTERM as pause does.
    let log = dir.path().join("sandbox.log");
    let log_uri = format!("file://{}", log.display());
    let with_ns = format!("network:{}", netns.path());
    let mut args = linux_run.to_vec();
    args.extend(["--with-ns", &with_ns, "--log-uri", &log_uri]);
    args.extend(pod("sandbox"));
    args.extend(["busybox:1", "pod1", "sh", "-c"]);
    args.push("echo sandbox up as $(id -u); trap 'exit 0' TERM; while true; do sleep 1; done");
    containerd.ctr_ok(&args);
    containerd.wait_status("pod1", "RUNNING");
    let sandbox = task_pid(&containerd, "pod1");
    let shims = containerd.shims();
    assert_eq!(shims.len(), 1, "{shims:?}");
    assert_ne!(sandbox, shims[0], "the sandbox is a process of its own");
    assert_eq!(
        inode(&format!("/proc/{sandbox}/ns/net")),
        inode(&netns.path()),
        "the sandbox runs in the pod's network namespace"
    );
    // In the cgroup the spec names (ctr's `/NAMESPACE/ID`; the kubelet's
    // pod cgroup on a node).
    let cgroup = std::fs::read_to_string(format!("/proc/{sandbox}/cgroup")).unwrap();
    assert!(
        cgroup
            .lines()
            .any(|l| l.contains("memory") && l.ends_with(":/default/pod1")),
        "{cgroup}"
    );
    // Its processes, as `ctr task ps` lists them: the shell and its sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = containerd.ctr_ok(&["task", "ps", "pod1"]);
        let pids: Vec<&str> = ps.lines().skip(1).collect();
        if pids.len() >= 2 && pids[0].starts_with(&sandbox.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "{ps}");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_line(&log, "sandbox up as 0");

    // The pod's containers name the sandbox's network by its pid, as CRI
    // does, and are served by the sandbox's shim.
    let pod_ns = format!("network:/proc/{sandbox}/ns/net");
    let mut args = RUN.to_vec();
    args.extend(["-d", "--with-ns", &pod_ns]);
    args.extend(pod("container"));
    args.extend(["hello:1", "pod1-web", "/hello.wasm"]);
    containerd.ctr_ok(&args);
    let mut args = linux_run.to_vec();
    args.extend(["--with-ns", &pod_ns]);
    args.extend(pod("container"));
    args.extend([
        "busybox:1",
        "pod1-httpd",
        "httpd",
        "-f",
        "-p",
        "8081",
        "-h",
        "/www",
    ]);
    containerd.ctr_ok(&args);
    containerd.wait_status("pod1-web", "RUNNING");
    containerd.wait_status("pod1-httpd", "RUNNING");
    // A Linux container of the pod shares the sandbox's IPC and UTS
    // namespaces (and so its hostname) when the spec names them.
    let ipc_ns = format!("ipc:/proc/{sandbox}/ns/ipc");
    let uts_ns = format!("uts:/proc/{sandbox}/ns/uts");
    let said = dir.path().join("said.log");
    let said_uri = format!("file://{}", said.display());
    let mut args = linux_run.to_vec();
    args.retain(|a| *a != "-d");
    args.extend(["--rm", "--log-uri", &said_uri]);
    args.extend([
        "--with-ns",
        &pod_ns,
        "--with-ns",
        &ipc_ns,
        "--with-ns",
        &uts_ns,
    ]);
    args.extend(pod("container"));
    args.extend(["busybox:1", "pod1-says", "sh", "-c"]);
    args.push("echo $(hostname) $(readlink /proc/self/ns/ipc)");
    containerd.ctr_ok(&args);
    let ipc = std::fs::read_link(format!("/proc/{sandbox}/ns/ipc")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&said).unwrap().trim(),
        format!("pod1 {}", ipc.display())
    );
    assert_eq!(containerd.shims(), shims, "one shim serves the whole pod");
    assert_eq!(task_pid(&containerd, "pod1-web"), shims[0]);

    // Both answer on the pod's network, and only there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while netns.curl("http://127.0.0.1:8080/pod").0 != 200
        || netns.curl("http://127.0.0.1:8081/").0 != 200
    {
        assert!(Instant::now() < deadline, "{}", containerd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        netns.curl("http://127.0.0.1:8080/pod"),
        (200, "hello from /pod\n".into())
    );
    assert_eq!(
        netns.curl("http://127.0.0.1:8081/"),
        (200, "hello from busybox\n".into())
    );
    assert!(std::net::TcpStream::connect("127.0.0.1:8081").is_err());
    let metrics = containerd.ctr_ok(&["task", "metrics", "pod1-httpd"]);
    assert!(metrics.contains("memory"), "{metrics}");

    // A command runs in a Linux container (`kubectl exec` on a node), with
    // its output and exit status; a wasm container has no processes.
    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "look",
        "pod1-httpd",
        "sh",
        "-c",
        "cat /www/index.html; hostname; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from busybox\npod1-httpd\n"
    );
    let out = containerd.ctr(&["task", "exec", "--exec-id", "look", "pod1-web", "sh"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no processes to run a command in"), "{said}");

    // Each ends as containerd asks, containers first, then the sandbox.
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pod1-httpd"]);
    containerd.ctr_ok(&["task", "kill", "pod1-web"]);
    containerd.wait_status("pod1-httpd", "STOPPED");
    containerd.wait_status("pod1-web", "STOPPED");
    assert_eq!(containerd.remove_task("pod1-httpd"), 137);
    assert_eq!(containerd.remove_task("pod1-web"), 0);
    assert_eq!(containerd.shims(), shims, "the sandbox's shim stays");
    containerd.ctr_ok(&["task", "kill", "pod1"]);
    containerd.wait_status("pod1", "STOPPED");
    assert_eq!(containerd.remove_task("pod1"), 0);
    for id in ["pod1-httpd", "pod1-web", "pod1"] {
        containerd.ctr_ok(&["container", "rm", id]);
    }

    // Nothing left: no shim, process, mount or cgroup.
    containerd.wait_no_shims();
    assert!(!Path::new(&format!("/proc/{sandbox}")).exists());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = containerd.dir.path().to_str().unwrap();
    assert!(!mounts.contains(root), "{mounts}");
    let cgroups = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for mount_point in cgroups
        .lines()
        .filter(|l| l.contains(" - cgroup"))
        .filter_map(|l| l.split(' ').nth(4))
    {
        let left = Path::new(mount_point).join("default/pod1");
        assert!(!left.exists(), "{} was left", left.display());
    }
}

#[test]
fn a_linux_container_that_cannot_run_says_why_in_its_log() {
    let containerd = Containerd::start();
    let dir = tempfile::tempdir().unwrap();
    containerd.import_busybox(dir.path());
    let log = dir.path().join("task.log");
    let log_uri = format!("file://{}", log.display());
    let run = |id: &str, argv: &[&str]| {
        let mut args = vec!["run", "--runtime", "io.containerd.berth.v1", "--rm"];
        args.extend(["--log-uri", &log_uri, "busybox:1", id]);
        args.extend(argv);
        containerd.ctr(&args)
    };
    // Its output, then its exit status.
    let out = run("says", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert!(!out.status.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("out\n") && said.contains("err\n"), "{said}");
    // A program that is not there: the task ends 127, the reason in its log.
    let out = run("missing", &["/bin/nothing-here"]);
    assert!(!out.status.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("nothing-here"), "{said}");
    assert_eq!(containerd.ctr_ok(&["task", "ls", "-q"]), "");
    containerd.wait_no_shims();
}
