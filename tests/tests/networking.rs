//! Networking beyond HTTP, end to end: a real Redis (Debian's redis-server,
//! packed into an image here) behind a TCP Service, reached by redis-cli on
//! the Service's node port and virtual IP, and by a wasm guest over
//! granted `wasi:sockets`. Needs root (Linux containers) and the Debian
//! packages busybox-static and redis-server (tests/prepare.sh installs them).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{berth, busybox, kube};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

fn redis_cli() -> &'static str {
    assert!(
        Path::new("/usr/bin/redis-cli").exists(),
        "redis-cli is required (Debian package redis-tools, with redis-server; tests/prepare.sh \
         installs it)"
    );
    "/usr/bin/redis-cli"
}

/// Loads `redis:7`: the host's redis-server and its libraries, run without
/// persistence (nothing to write) and listening beyond its own loopback
/// refusal (protected mode wants a password otherwise).
fn load_redis(home: &Path) {
    assert!(
        Path::new(REDIS_SERVER).exists(),
        "{REDIS_SERVER} is required (Debian package redis-server; tests/prepare.sh installs it)"
    );
    let layer = busybox::host_binaries_layer(&[REDIS_SERVER]);
    let archive = busybox::archive(
        &[layer],
        serde_json::json!({
            "Entrypoint": [REDIS_SERVER],
            "Cmd": ["--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"],
        }),
        "redis:7",
    );
    busybox::load_archive(home, &archive);
}

/// A daemon in `home` whose node ports are its own: one free port, so
/// daemons of tests running side by side never share one.
fn daemon(home: &Path) -> berth_tests::BerthRun {
    let port = berth_tests::free_port().to_string();
    let range = format!("{port}-{port}");
    berth_tests::BerthRun::start_command(home, &["daemon", "--node-port-range", &range])
}

/// What the echo guest behind `service` reports (through the ingress at
/// `ingress`) of sending `body` over a TCP connection to `target`
/// (`HOST:PORT`, and `&lines=N` for N lines of the reply).
async fn echo_tcp(ingress: &str, service: &str, target: &str, body: &[u8]) -> String {
    berth_tests::send(
        "POST",
        &format!("{ingress}/?tcp={target}"),
        &[("host", &format!("{service}.localhost"))],
        body.to_vec(),
    )
    .await
    .text()
}

/// `redis-cli -h HOST -p PORT ARGS…`: its output, trimmed.
fn cli(host: &str, port: u64, args: &[&str]) -> String {
    let out = Command::new(redis_cli())
        .args(["-h", host, "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Waits until `redis-cli … ping` answers PONG at `host:port`.
fn wait_for_pong(host: &str, port: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = cli(host, port, &["ping"]);
        if answer == "PONG" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no PONG from {host}:{port}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Redis (`redis:7`, see [`load_redis`]) as a Deployment of `replicas`
/// in `namespace`, behind a Service `redis` of `kind`.
fn redis(namespace: &str, replicas: u32, kind: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: redis, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: redis}}}}
  template:
    metadata: {{labels: {{app: redis}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: redis
        image: redis:7
        ports: [{{containerPort: 6379}}]
        readinessProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: redis, namespace: {namespace}}}
spec:
  type: {kind}
  selector: {{app: redis}}
  ports: [{{port: 6379}}]
---
"#
    )
}

const STACK: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: granted
  labels: {app: granted}
  annotations: {berth.dev/allow-tcp: "redis.default.svc:6379"}
spec:
  containers: [{name: app, image: "echo:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: granted}
spec:
  selector: {app: granted}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: denied, labels: {app: denied}}
spec:
  containers: [{name: app, image: "echo:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: denied}
spec:
  selector: {app: denied}
  ports: [{port: 80}]
"#;

#[tokio::test]
async fn redis_behind_a_tcp_service_answers_redis_cli_and_a_granted_wasm_guest() {
    let home = tempfile::tempdir().unwrap();
    load_redis(home.path());
    kube::build_image(home.path(), Path::new(berth_tests::guests::ECHO), "echo:1");
    let daemon = daemon(home.path());
    let ingress = daemon.ingress();
    kube::apply(home.path(), &(redis("default", 1, "NodePort") + STACK));
    kube::wait_ready(home.path(), 3);

    let service = berth_tests::ok(berth(
        home.path(),
        &["get", "service", "redis", "-o", "json"],
    ));
    let service: serde_json::Value = serde_json::from_str(&service.stdout).unwrap();
    let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(
        cluster_ip.starts_with("127."),
        "a virtual IP on the loopback: {service}"
    );
    assert_eq!(service["spec"]["clusterIPs"][0], cluster_ip.as_str());

    // redis-cli on the node port and on the virtual IP: one Redis.
    wait_for_pong("127.0.0.1", node_port);
    wait_for_pong(&cluster_ip, 6379);
    assert_eq!(cli("127.0.0.1", node_port, &["set", "from-cli", "1"]), "OK");
    assert_eq!(cli(&cluster_ip, 6379, &["get", "from-cli"]), "1");

    // The granted guest sets and gets a key through the Service's name.
    let text = echo_tcp(
        &ingress,
        "granted",
        "redis.default.svc:6379&lines=3",
        b"SET greeting hello\r\nGET greeting\r\n",
    )
    .await;
    assert!(
        text.contains(r#"tcp redis.default.svc:6379: ok: "+OK\r\n$5\r\nhello\r\n""#),
        "{text}"
    );
    assert_eq!(cli("127.0.0.1", node_port, &["get", "greeting"]), "hello");

    // Without the grant the guest can neither look the name up nor connect
    // to the address, and the daemon's log says why.
    for target in ["redis.default.svc:6379", &format!("{cluster_ip}:6379")] {
        let text = echo_tcp(&ingress, "denied", target, b"PING\r\n").await;
        assert!(text.contains(&format!("tcp {target}: error:")), "{text}");
    }
    assert!(daemon.wait_for_log("denied", Duration::from_secs(5)));
    // A granted guest still gets only its grant: another port of the same
    // virtual IP is refused.
    let text = echo_tcp(
        &ingress,
        "granted",
        &format!("{cluster_ip}:6380"),
        b"PING\r\n",
    )
    .await;
    assert!(
        text.contains(&format!("tcp {cluster_ip}:6380: error: Permission denied")),
        "{text}"
    );
    assert!(daemon.wait_for_log(
        "denied socket use: not a host and port the workload's TCP grants name",
        Duration::from_secs(5)
    ));
}

#[test]
fn a_rolling_update_behind_a_tcp_service_refuses_no_connection() {
    let home = tempfile::tempdir().unwrap();
    load_redis(home.path());
    let _daemon = daemon(home.path());
    kube::apply(home.path(), &redis("default", 2, "NodePort"));
    let before = kube::wait_ready(home.path(), 2);
    let service = berth_tests::ok(berth(
        home.path(),
        &["get", "service", "redis", "-o", "json"],
    ));
    let service: serde_json::Value = serde_json::from_str(&service.stdout).unwrap();
    let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    wait_for_pong("127.0.0.1", node_port);

    // A steady client: a new connection for every ping, all through the
    // rollout, and one held open across it.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut answered, mut failed) = (0, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match cli("127.0.0.1", node_port, &["ping"]).as_str() {
                    "PONG" => answered += 1,
                    other => failed.push(other.to_owned()),
                }
            }
            (answered, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    berth_tests::ok(kube::kubectl(
        home.path(),
        &["rollout", "restart", "deployment/redis"],
    ));
    berth_tests::ok(kube::kubectl(
        home.path(),
        &["rollout", "status", "deployment/redis", "--timeout=90s"],
    ));
    // Until the old replicas are gone, not only out of the endpoints.
    let deadline = Instant::now() + Duration::from_secs(30);
    while kube::pods(home.path()).iter().any(|p| {
        before
            .iter()
            .any(|(name, _)| p["metadata"]["name"] == name.as_str())
    }) {
        assert!(Instant::now() < deadline, "the old replicas did not go");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, failed) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {answered} pings failed: {failed:?}",
        failed.len()
    );
    eprintln!("{answered} pings answered through the rollout");
    assert!(answered > 20, "only {answered} pings in the rollout");
}

const NAMES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: hello, labels: {app: hello}}
spec:
  containers: [{name: app, image: "hello:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: box}
spec:
  containers:
  - {name: sh, image: "busybox:1", command: [sleep, "3600"]}
"#;

/// `kubectl exec box -- sh -c SCRIPT`: its output.
fn in_box(home: &Path, script: &str) -> berth_tests::Finished {
    kube::kubectl(home, &["exec", "box", "--", "sh", "-c", script])
}

#[test]
fn a_linux_pod_reaches_services_by_name_at_layer_4_and_over_http() {
    let home = tempfile::tempdir().unwrap();
    load_redis(home.path());
    busybox::load(home.path(), "busybox:1");
    kube::build_image(
        home.path(),
        Path::new(berth_tests::guests::HELLO),
        "hello:1",
    );
    let _daemon = daemon(home.path());
    kube::apply(home.path(), &(redis("other", 1, "ClusterIP") + NAMES));
    kube::wait_ready(home.path(), 3);

    // The pod's /etc/hosts names it and every Service.
    let hosts = berth_tests::ok(in_box(home.path(), "cat /etc/hosts")).stdout;
    assert!(hosts.contains("\tbox\n"), "{hosts}");
    assert!(hosts.contains(" redis.other.svc.cluster.local"), "{hosts}");
    assert!(hosts.contains("\thello hello.default"), "{hosts}");

    // Redis in another namespace, at layer 4, by its qualified name.
    let pong = in_box(
        home.path(),
        "printf 'PING\\r\\n' | nc -w 3 redis.other.svc 6379",
    );
    assert_eq!(pong.stdout.trim(), "+PONG", "{pong:?}");
    // A wasm HTTP service by its short name.
    let hello = in_box(home.path(), "wget -qO- http://hello/");
    assert!(hello.stdout.contains("hello from /"), "{hello:?}");

    // A Service made after the pod started is named in its hosts file too.
    kube::apply(
        home.path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: later}\nspec:\n  selector: {app: hello}\n  ports: [{port: 8080, targetPort: 80}]\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = in_box(home.path(), "wget -qO- http://later:8080/");
        if got.stdout.contains("hello from /") {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // An address of the service network no Service has is refused.
    let nothing = in_box(
        home.path(),
        "printf 'PING\\r\\n' | nc -w 2 127.96.0.1 6379; echo rc=$?",
    );
    assert!(!nothing.stdout.contains("PONG"), "{nothing:?}");
}

#[test]
fn berth_run_publishes_a_linux_container_s_port_as_docker_run_p() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let port = berth_tests::free_port();
    let publish = format!("127.0.0.1:{port}:80");
    /// Killed if the test ends early, so no container outlives it.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut run = Command::new(berth_tests::berth_bin())
        .args(["run", "-p", &publish, "busybox:1", "--", "sh", "-c"])
        // As a container's pid 1, httpd would ignore SIGTERM.
        .arg("trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait")
        .env("BERTH_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    // Taken as soon as berth listens; answered once httpd does.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            use std::io::{Read as _, Write as _};
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut page = String::new();
            s.read_to_string(&mut page)?;
            Ok(page)
        });
        match got {
            Ok(page) if page.contains(" 200 OK\r\n") => break page,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let page = page.split_once("\r\n\r\n").unwrap().1.to_owned();
    assert_eq!(page, "hello from busybox\n");

    // The same host port again is refused before anything runs, naming it.
    let again = berth(
        home.path(),
        &["run", "-p", &publish, "busybox:1", "--", "true"],
    );
    assert!(!again.success);
    assert!(
        again
            .stderr
            .contains(&format!("publishing 127.0.0.1:{port} (-p)")),
        "{}",
        again.stderr
    );
    let udp = berth(
        home.path(),
        &["run", "-p", "5353:53/udp", "busybox:1", "--", "true"],
    );
    assert!(
        udp.stderr.contains("udp is not supported (TCP only)"),
        "{}",
        udp.stderr
    );

    let killed = Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    run.0.wait().unwrap();
    // Gone with it: nothing answers on the port.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn host_ports_publish_a_linux_and_a_wasm_container_on_the_host() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    kube::build_image(
        home.path(),
        Path::new(berth_tests::guests::HELLO),
        "hello:1",
    );
    let _daemon = daemon(home.path());
    let (linux, wasm) = (berth_tests::free_port(), berth_tests::free_port());
    kube::apply(
        home.path(),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: published}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox:1
    command: [httpd, -f, -p, "80", -h, /www]
    ports: [{{containerPort: 80, hostPort: {linux}, hostIP: 127.0.0.1}}]
    readinessProbe: {{tcpSocket: {{port: 80}}, periodSeconds: 1}}
  - name: hello
    image: hello:1
    ports: [{{containerPort: 8080, hostPort: {wasm}, hostIP: 127.0.0.1}}]
"#
        ),
    );
    kube::wait_ready(home.path(), 1);
    let page = berth_tests::get(&format!("http://127.0.0.1:{linux}/index.html")).await;
    assert_eq!(page.body, "hello from busybox\n");
    let hello = berth_tests::get(&format!("http://127.0.0.1:{wasm}/")).await;
    assert!(hello.body.contains("hello from /"), "{}", hello.body);

    // The pod gone, so are its host ports.
    berth_tests::ok(kube::kubectl(home.path(), &["delete", "pod", "published"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", linux)).is_ok() {
        assert!(Instant::now() < deadline, "hostPort {linux} still open");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A network namespace standing in for the internet: a veth pair from the
/// host to it, and busybox httpd there. Gone when dropped.
struct Internet {
    name: String,
    /// The far end's address.
    ip: String,
    /// Its HTTP server's, with the port.
    address: String,
    server: std::process::Child,
    /// Its name server, once asked for.
    dns: Option<std::process::Child>,
    _www: tempfile::TempDir,
}

impl Internet {
    fn start() -> Internet {
        // Bits that differ between runs, for names and addresses.
        let n: u16 = std::process::id() as u16 ^ berth_tests::free_port();
        let (a, b) = ((n >> 8) as u8, (n as u8) & 0xfc);
        let name = format!("bt{n:04x}");
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("ip (Debian package iproute2)");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let (host, far) = (format!("{name}h"), format!("{name}n"));
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &far]);
        ip(&["link", "set", &far, "netns", &name]);
        ip(&["addr", "add", &format!("10.{a}.{b}.1/30"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.{a}.{b}.2/30"),
            "dev",
            &far,
        ]);
        ip(&["-n", &name, "link", "set", &far, "up"]);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), "from the internet\n").unwrap();
        let address = format!("10.{a}.{b}.2:8099");
        let server = Command::new("ip")
            .args([
                "netns", "exec", &name, "busybox", "httpd", "-f", "-p", &address, "-h",
            ])
            .arg(www.path())
            .spawn()
            .unwrap();
        Internet {
            name,
            ip: format!("10.{a}.{b}.2"),
            address,
            server,
            dns: None,
            _www: www,
        }
    }

    /// A name server on the far end (port 53) answering `names` with its
    /// own address, NXDOMAIN for others.
    /// `url` fetched from inside the internet's namespace, with curl.
    fn get(&self, url: &str) -> String {
        curl(Command::new("ip").args(["netns", "exec", &self.name, "curl", "-sS", "-m", "10", url]))
    }

    fn serve_dns(&mut self, names: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dns_server.py");
        let mut server = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3"])
            .arg(script)
            .arg(&self.ip)
            .args(names.iter().map(|n| format!("{n}={}", self.ip)))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening", "the name server did not start");
        self.dns = Some(server);
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(dns) = &mut self.dns {
            let _ = dns.kill();
            let _ = dns.wait();
        }
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_linux_pod_reaches_an_outside_address_through_its_way_out() {
    let internet = Internet::start();
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let _daemon = daemon(home.path());
    kube::apply(
        home.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: sh, image: \"busybox:1\", command: [sleep, \"3600\"]}\n",
    );
    kube::wait_ready(home.path(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = in_box(
            home.path(),
            &format!("wget -qO- http://{}/", internet.address),
        );
        if got.stdout == "from the internet\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its way out ends with the pod.
    let pasta = || {
        Command::new("pgrep")
            .args(["-f", &home.path().display().to_string()])
            .output()
            .unwrap()
            .stdout
    };
    assert!(!pasta().is_empty(), "no pasta for the pod");
    berth_tests::ok(kube::kubectl(home.path(), &["delete", "pod", "box"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pasta().is_empty() {
        assert!(Instant::now() < deadline, "pasta outlived its pod");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_linux_pod_resolves_outside_names_through_its_way_out() {
    let mut internet = Internet::start();
    internet.serve_dns(&["outside.test"]);
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    // The host's resolver, as the kubelet's --resolv-conf names it.
    let resolv_conf = home.path().join("host-resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!("nameserver {}\nsearch test\noptions edns0\n", internet.ip),
    )
    .unwrap();
    let port = berth_tests::free_port().to_string();
    let _daemon = berth_tests::BerthRun::start_command(
        home.path(),
        &[
            "daemon",
            "--node-port-range",
            &format!("{port}-{port}"),
            "--resolv-conf",
            resolv_conf.to_str().unwrap(),
        ],
    );
    kube::apply(
        home.path(),
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: box}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: sh, image: \"busybox:1\", command: [sleep, \"3600\"]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: own}}\nspec:\n  terminationGracePeriodSeconds: 1\n  dnsPolicy: \"None\"\n  dnsConfig:\n    nameservers: [{}]\n    searches: [corp.example]\n    options: [{{name: ndots, value: \"2\"}}]\n  containers:\n  - {{name: sh, image: \"busybox:1\", command: [sleep, \"3600\"]}}\n",
            internet.ip
        ),
    );
    kube::wait_ready(home.path(), 2);
    // The pod asks its way out, which asks the host's name server.
    let resolv = berth_tests::ok(in_box(home.path(), "cat /etc/resolv.conf")).stdout;
    assert!(resolv.contains("nameserver 169.254.1.1\n"), "{resolv}");
    assert!(!resolv.contains(&internet.ip), "{resolv}");
    assert!(resolv.contains("search test\noptions edns0\n"), "{resolv}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for url in ["http://outside.test:8099/", "http://outside:8099/"] {
        loop {
            let got = in_box(home.path(), &format!("wget -qO- {url}"));
            if got.stdout == "from the internet\n" {
                break;
            }
            assert!(Instant::now() < deadline, "{url}: {got:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // A name no server has is not found, and says so.
    let missing = in_box(home.path(), "wget -qO- http://nowhere.test:8099/");
    assert!(!missing.success, "{missing:?}");
    assert!(missing.stderr.contains("bad address"), "{}", missing.stderr);
    // dnsPolicy None: its dnsConfig alone.
    let own = berth_tests::ok(kube::kubectl(
        home.path(),
        &["exec", "own", "--", "cat", "/etc/resolv.conf"],
    ))
    .stdout;
    assert!(
        own.ends_with(&format!(
            "nameserver {}\nsearch corp.example\noptions ndots:2\n",
            internet.ip
        )),
        "{own}"
    );
}

/// The pid in the first `pasta.pid` under `dir`.
fn pasta_pid(dir: &Path) -> Option<u32> {
    berth_tests::files_under(dir)
        .into_iter()
        .find(|(path, _)| path.ends_with("pasta.pid"))
        .and_then(|(path, _)| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse().ok())
}

#[test]
fn a_pod_s_way_out_outlives_a_killed_daemon_and_is_adopted_with_its_containers() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let mut first = daemon(home.path());
    kube::apply(
        home.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: sh, image: \"busybox:1\", command: [sleep, \"3600\"]}\n",
    );
    kube::wait_ready(home.path(), 1);
    let pid = pasta_pid(home.path()).expect("a pasta.pid for the pod");
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(comm(pid).starts_with("pas"), "{pid}: {}", comm(pid));
    // Killed outright, berth runs no cleanup: the container runs on, and
    // so does its way out, carrying its connections.
    first.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        comm(pid).starts_with("pas"),
        "pasta {pid} died with the daemon"
    );
    // The next daemon adopts the container and the same pasta with it.
    let _second = daemon(home.path());
    kube::wait_ready(home.path(), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pasta_pid(home.path()), Some(pid));
    assert!(comm(pid).starts_with("pas"), "pasta {pid} was not kept");
    // It goes with the pod.
    berth_tests::ok(berth_tests::berth(home.path(), &["delete", "pod", "box"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while comm(pid).starts_with("pas") {
        assert!(Instant::now() < deadline, "pasta {pid} outlived its pod");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What pod `pod` gets from `url` (busybox wget), trimmed, once it starts
/// with `prefix` (waiting up to 15 s for it to).
fn answer(home: &Path, pod: &str, url: &str, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = kube::kubectl(home, &["exec", pod, "--", "wget", "-qO-", url]);
        if got.stdout.starts_with(prefix) {
            return got.stdout.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "{pod}: {url}: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A busybox container answering `i am HOSTNAME` on port 8080.
const HTTPD: &str = r#"      containers:
      - name: httpd
        image: "busybox:1"
        command: [sh, -c, 'mkdir -p /w && echo "i am $(hostname)" > /w/index.html && exec httpd -f -p 8080 -h /w']
        ports: [{containerPort: 8080}]"#;

/// A StatefulSet of `replicas` httpd pods under a headless Service, and a
/// client pod.
fn headless(replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
{HTTPD}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: box}}
spec:
  containers:
  - {{name: sh, image: "busybox:1", command: [sleep, "3600"]}}
"#
    )
}

#[test]
fn a_linux_pod_reaches_a_headless_service_s_pods_by_their_own_names() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let _daemon = daemon(home.path());
    kube::apply(home.path(), &headless(2));
    kube::wait_ready(home.path(), 3);
    let fetch = |name: &str| answer(home.path(), "box", &format!("http://{name}:8080/"), "i am ");
    // Each pod by its own name, as cluster DNS names a StatefulSet's: the
    // connection reaches that pod and no other.
    for _ in 0..3 {
        assert_eq!(fetch("web-0.web"), "i am web-0");
        assert_eq!(fetch("web-1.web.default.svc.cluster.local"), "i am web-1");
    }
    let hosts = berth_tests::ok(in_box(home.path(), "cat /etc/hosts")).stdout;
    assert!(hosts.contains("\tweb-0.web web-0.web.default "), "{hosts}");
    // The Service's own name is one of its pods.
    assert!(fetch("web").starts_with("i am web-"));

    // A pod added later is named as soon as it is ready.
    kube::apply(home.path(), &headless(3));
    kube::wait_ready(home.path(), 4);
    assert_eq!(fetch("web-2.web"), "i am web-2");
    assert_eq!(fetch("web-0.web"), "i am web-0");
}

#[tokio::test]
async fn a_granted_wasm_guest_reaches_one_pod_of_a_headless_service_by_its_name() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    kube::build_image(home.path(), Path::new(berth_tests::guests::ECHO), "echo:1");
    let daemon = daemon(home.path());
    let ingress = daemon.ingress();
    let granted = "\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: granted\n  labels: {app: granted}\n  \
                   annotations: {berth.dev/allow-tcp: \"web-1.web:8080\"}\nspec:\n  \
                   containers: [{name: app, image: \"echo:1\"}]\n---\napiVersion: v1\nkind: Service\n\
                   metadata: {name: granted}\nspec:\n  selector: {app: granted}\n  ports: [{port: 80}]\n";
    kube::apply(home.path(), &(headless(2) + granted));
    kube::wait_ready(home.path(), 4);
    // Its socket, by the pod's name, reaches that pod and no other.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = echo_tcp(
            &ingress,
            "granted",
            "web-1.web:8080&lines=20",
            b"GET / HTTP/1.0\r\n\r\n",
        )
        .await;
        if text.contains("i am web-1") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its grant names that pod alone.
    let text = echo_tcp(
        &ingress,
        "granted",
        "web-0.web:8080",
        b"GET / HTTP/1.0\r\n\r\n",
    )
    .await;
    assert!(text.contains("tcp web-0.web:8080: error:"), "{text}");
}

/// Three busybox replicas behind a Service with `ClientIP` affinity, each
/// answering with its name, and four client pods.
fn affinity_stack() -> String {
    let mut text = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: who}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: who}}}}
  template:
    metadata: {{labels: {{app: who}}}}
    spec:
{HTTPD}
---
apiVersion: v1
kind: Service
metadata: {{name: who}}
spec:
  selector: {{app: who}}
  sessionAffinity: ClientIP
  ports: [{{port: 8080}}]
"#
    );
    for i in 0..4 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: c{i}}}\nspec:\n  containers:\n  \
             - {{name: sh, image: \"busybox:1\", command: [sleep, \"3600\"]}}\n"
        ));
    }
    text
}

#[test]
fn client_ip_affinity_tells_a_service_s_in_cluster_clients_apart() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let _daemon = daemon(home.path());
    kube::apply(home.path(), &affinity_stack());
    kube::wait_ready(home.path(), 7);
    let fetch = |client: &str| answer(home.path(), client, "http://who:8080/", "i am who-");
    // Each client pod keeps its replica; the clients are not one client
    // (all of them connect from their own loopback), so they are spread.
    let mut chosen = std::collections::BTreeSet::new();
    for i in 0..4 {
        let client = format!("c{i}");
        let first = fetch(&client);
        for _ in 0..3 {
            assert_eq!(fetch(&client), first, "{client} changed replicas");
        }
        chosen.insert(first);
    }
    assert!(
        chosen.len() >= 2,
        "every client pod got one replica: {chosen:?}"
    );
}

/// `ask`'s answer once `done` takes it, asked every 200 ms for up to 10 s
/// (what the daemon's loop puts in force takes a pass or two).
fn until(mut ask: impl FnMut() -> String, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ask();
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{got}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`until`] for an answer that comes asynchronously.
async fn eventually<F: std::future::Future<Output = String>>(
    mut ask: impl FnMut() -> F,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ask().await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pods on both backends behind Services, clients on both backends, and an
/// outside address: what NetworkPolicies are tried against.
/// The pods and Services [`policies`] police; the api (wasm) and the db
/// (Linux) published on the host's `api_port` and `db_port` of `host_ip`
/// too.
fn policed_stack(api_port: u16, db_port: u16, host_ip: &str) -> String {
    let client = |name: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  \
             terminationGracePeriodSeconds: 1\n  containers:\n  \
             - {{name: sh, image: \"busybox:1\", command: [sleep, \"3600\"]}}\n"
        )
    };
    let front = |name: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  \
             containers: [{{name: app, image: \"front:1\"}}]\n---\napiVersion: v1\nkind: Service\n\
             metadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n"
        )
    };
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: api, labels: {{app: api}}}}
spec:
  containers:
  - name: app
    image: "hello:1"
    ports: [{{containerPort: 80, hostPort: {api_port}, hostIP: {host_ip}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: api}}
spec:
  selector: {{app: api}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: db, labels: {{app: db}}}}
spec:
  terminationGracePeriodSeconds: 1
{}
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  selector: {{app: db}}
  ports: [{{port: 8080}}]
{}{}{}{}"#,
        HTTPD
            .replace("\n    ", "\n")
            .replacen("      containers:", "  containers:", 1)
            .replace(
                "ports: [{containerPort: 8080}]",
                &format!(
                    "ports: [{{containerPort: 8080, hostPort: {db_port}, hostIP: {host_ip}}}]"
                )
            ),
        client("box-in", "role: client"),
        client("box-out", "role: other"),
        front("front", "app: front, role: client"),
        front("front-out", "app: front-out"),
    )
}

/// Only clients may reach the api and the db; clients may reach the api
/// and the internet's web server, nothing else.
fn policies(internet: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: clients-only}}
spec:
  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [api, db]}}]}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: clients-out}}
spec:
  podSelector: {{matchLabels: {{role: client}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{podSelector: {{matchLabels: {{app: api}}}}}}]
  - to: [{{ipBlock: {{cidr: {internet}/32}}}}]
    ports: [{{port: 8099}}]
"#
    )
}

#[tokio::test]
async fn network_policies_let_only_the_pods_they_name_connect_on_both_backends() {
    let internet = Internet::start();
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    kube::build_image(
        home.path(),
        Path::new(berth_tests::guests::HELLO),
        "hello:1",
    );
    kube::build_image(
        home.path(),
        Path::new(berth_tests::guests::SHOP_FRONT),
        "front:1",
    );
    let daemon = daemon(home.path());
    let ingress = daemon.ingress();
    let (api_port, db_port) = (berth_tests::free_port(), berth_tests::free_port());
    // The host's end of the link to the internet's namespace, where the
    // api and the db are published: a client there is not this machine.
    let host_ip = match internet.ip.rsplit_once('.') {
        Some((net, _)) => format!("{net}.1"),
        None => panic!("{} is not an IPv4 address", internet.ip),
    };
    kube::apply(home.path(), &policed_stack(api_port, db_port, &host_ip));
    kube::wait_ready(home.path(), 6);
    let home = home.path();
    let wget = |pod: &str, url: &str| {
        kube::kubectl(
            home,
            &[
                "exec",
                pod,
                "--",
                "sh",
                "-c",
                &format!("wget -qO- {url} 2>&1; echo rc=$?"),
            ],
        )
        .stdout
    };
    let outside = format!("http://{}/", internet.address);
    // With no policy, everyone reaches everything.
    assert_eq!(
        answer(home, "box-out", "http://db:8080/", "i am "),
        "i am db"
    );
    assert!(answer(home, "box-out", "http://api/", "hello").starts_with("hello from /"));
    assert_eq!(
        answer(home, "box-in", &outside, "from"),
        "from the internet"
    );
    let through = |front: &'static str| {
        let ingress = ingress.clone();
        async move {
            berth_tests::send(
                "GET",
                &format!("{ingress}/api/"),
                &[("host", &format!("{front}.localhost"))],
                Vec::new(),
            )
            .await
        }
    };
    assert!(through("front-out").await.text().contains("hello from /"));
    // Published on the host, both answer the internet and this machine.
    let api_published = format!("http://{host_ip}:{api_port}/");
    let db_published = format!("http://{host_ip}:{db_port}/");
    for url in [&api_published, &db_published] {
        let got = internet.get(url);
        assert!(
            got.contains("hello from /") || got.contains("i am db"),
            "{got}"
        );
        let got = host_get(url);
        assert!(
            got.contains("hello from /") || got.contains("i am db"),
            "{got}"
        );
    }

    kube::apply(home, &policies(&internet.ip));
    // Policies are put in force by the daemon's loop: wait for the first
    // denial.
    let got = until(
        || wget("box-out", "http://api/"),
        |got| !got.contains("hello from"),
    );
    // Refused as the connection would be on a cluster.
    assert!(got.contains("reset") && got.contains("rc=1"), "{got}");
    // Linux to Linux at layer 4: refused for the pod the policy does not
    // name, carried for the one it does.
    let refused = wget("box-out", "http://db:8080/");
    assert!(
        !refused.contains("i am db") && !refused.contains("rc=0"),
        "{refused}"
    );
    // box-in may take db's ingress, but its own egress names only the api.
    let egress = wget("box-in", "http://db:8080/");
    assert!(
        !egress.contains("i am db") && !egress.contains("rc=0"),
        "{egress}"
    );
    assert!(wget("box-in", "http://api/").contains("hello from /"));
    // wasm to wasm, in-process: the client pod's labels decide.
    let allowed = through("front").await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert!(allowed.text().contains("hello from /"));
    let denied = through("front-out").await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("NetworkPolicy"), "{}", denied.text());
    // The internet is no pod: the policies admit it to neither published
    // port (a wasm container answers 403, a Linux one's connection is
    // reset); this machine's own connections are let through, as on a
    // cluster.
    let denied = internet.get(&api_published);
    assert!(denied.contains("403 Forbidden: NetworkPolicy"), "{denied}");
    let refused = internet.get(&db_published);
    assert!(
        !refused.contains("i am db") && !refused.contains("rc=0"),
        "{refused}"
    );
    assert!(host_get(&api_published).contains("hello from /"));
    assert!(host_get(&db_published).contains("i am db"));
    // An ipBlock for its address on the db's port lets it in there alone.
    let admitted = policies(&internet.ip).replace(
        "  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n",
        &format!(
            "  ingress:\n  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]\n  \
             - from: [{{ipBlock: {{cidr: {}/32}}}}]\n    ports: [{{port: 8080}}]\n",
            internet.ip
        ),
    );
    assert_ne!(admitted, policies(&internet.ip));
    kube::apply(home, &admitted);
    let got = until(
        || internet.get(&db_published),
        |got| got.contains("i am db"),
    );
    assert!(got.contains("rc=0"), "{got}");
    assert!(
        internet
            .get(&api_published)
            .contains("403 Forbidden: NetworkPolicy")
    );

    // Outside: the ipBlock's address on its port, and nothing else.
    assert_eq!(wget("box-in", &outside).trim(), "from the internet\nrc=0");
    assert_eq!(
        answer(home, "box-out", &outside, "from"),
        "from the internet"
    );
    // A change of policy reaches the pod's own network: without the
    // ipBlock, the way out is shut.
    let shut = policies(&internet.ip).replace(
        &format!(
            "  - to: [{{ipBlock: {{cidr: {}/32}}}}]\n    ports: [{{port: 8099}}]\n",
            internet.ip
        ),
        "",
    );
    assert_ne!(shut, policies(&internet.ip));
    kube::apply(home, &shut);
    let got = until(
        || wget("box-in", &outside),
        |got| !got.contains("from the internet"),
    );
    assert!(!got.contains("rc=0"), "{got}");
    // Deleted, the policies stop: everything reaches everything again.
    berth_tests::ok(kube::kubectl(
        home,
        &["delete", "networkpolicy", "clients-only", "clients-out"],
    ));
    assert_eq!(
        answer(home, "box-out", "http://db:8080/", "i am "),
        "i am db"
    );
    assert_eq!(
        answer(home, "box-in", &outside, "from"),
        "from the internet"
    );
    assert!(through("front-out").await.text().contains("hello from /"));
    assert!(internet.get(&api_published).contains("hello from /"));
    assert!(internet.get(&db_published).contains("i am db"));
}

/// `url` fetched by this machine with curl: what it printed, and its exit
/// code.
fn host_get(url: &str) -> String {
    curl(Command::new("curl").args(["-sS", "-m", "10", url]))
}

/// What `command` (a curl) printed, then `rc=` its exit code.
fn curl(command: &mut Command) -> String {
    let out = command.output().expect("curl (Debian package curl)");
    format!(
        "{}{}rc={}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    )
}

#[test]
fn kubectl_applies_lists_explains_and_refuses_network_policies() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    let home = home.path();
    let dir = tempfile::tempdir().unwrap();
    let good = kube::write(
        dir.path(),
        "good.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db}\nspec:\n  \
         podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: \
         {role: client}}}]\n    ports: [{port: 5432}]\n",
    );
    // kubectl checks it against the served schema, on the server.
    berth_tests::ok(kube::kubectl(
        home,
        &["apply", "--validate=strict", "-f", &good],
    ));
    let listed = berth_tests::ok(kube::kubectl(home, &["get", "netpol"])).stdout;
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(listed.contains("POD-SELECTOR"), "{listed}");
    assert!(listed.contains("db     app=db"), "{listed}");
    let explained = berth_tests::ok(kube::kubectl(
        home,
        &["explain", "networkpolicy.spec.ingress.from"],
    ))
    .stdout;
    assert!(explained.contains("ipBlock"), "{explained}");
    // berth's own describe lays it out as kubectl's does.
    let described = berth_tests::ok(berth(home, &["describe", "netpol", "db"])).stdout;
    for line in [
        "  PodSelector:      app=db\n",
        "  Allowing ingress traffic:\n    To Port: 5432/TCP\n    From:\n      PodSelector: role=client\n",
        "  Not affecting egress traffic\n",
        "  Policy Types:     Ingress\n",
    ] {
        assert!(described.contains(line), "{line:?} in {described}");
    }

    // A field Kubernetes does not have, and a value it refuses: each named,
    // and neither stored.
    let unknown = kube::write(
        dir.path(),
        "unknown.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: typo}\nspec:\n  \
         podSelector: {}\n  ingres: []\n",
    );
    let refused = kube::kubectl(home, &["apply", "--validate=strict", "-f", &unknown]);
    assert!(!refused.success, "{refused:?}");
    assert!(refused.stderr.contains("ingres"), "{refused:?}");
    let bad = kube::write(
        dir.path(),
        "bad.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec:\n  \
         podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]\n",
    );
    let refused = kube::kubectl(home, &["apply", "-f", &bad]);
    assert!(!refused.success, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("spec.egress[0].to[0].ipBlock.except[0]")
            && refused.stderr.contains("not strictly inside"),
        "{refused:?}"
    );
    let all = berth_tests::ok(kube::kubectl(
        home,
        &["get", "networkpolicies", "-o", "name"],
    ));
    assert_eq!(all.stdout.trim(), "networkpolicy.networking.k8s.io/db");
    berth_tests::ok(kube::kubectl(home, &["delete", "netpol", "db"]));
}

#[tokio::test]
async fn wasm_guests_reach_outside_only_where_their_egress_policies_allow() {
    let internet = Internet::start();
    let home = tempfile::tempdir().unwrap();
    kube::build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "fetch:1",
    );
    kube::build_image(home.path(), Path::new(berth_tests::guests::ECHO), "echo:1");
    let daemon = daemon(home.path());
    let ingress = daemon.ingress();
    let pod = |name: &str, image: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}, role: out}}\n  \
             annotations:\n    berth.dev/allow-outbound: \"{0}\"\n    berth.dev/allow-tcp: \"{0}\"\n\
             spec:\n  containers: [{{name: app, image: \"{image}\"}}]\n---\napiVersion: v1\nkind: Service\n\
             metadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n",
            internet.address
        )
    };
    kube::apply(
        home.path(),
        &(pod("fetch", "fetch:1") + &pod("socket", "echo:1")),
    );
    kube::wait_ready(home.path(), 2);
    let fetch = || {
        let ingress = ingress.clone();
        let url = format!("{ingress}/fetch?url=http://{}/", internet.address);
        async move {
            berth_tests::send("GET", &url, &[("host", "fetch.localhost")], Vec::new())
                .await
                .text()
        }
    };
    let target = format!("{}&lines=20", internet.address);
    let socket = || echo_tcp(&ingress, "socket", &target, b"GET / HTTP/1.0\r\n\r\n");
    assert!(fetch().await.contains("from the internet"));
    assert!(socket().await.contains("from the internet"));

    let policy = |cidr: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: out}}\nspec:\n  \
             podSelector: {{matchLabels: {{role: out}}}}\n  policyTypes: [Egress]\n  egress:\n  \
             - to: [{{ipBlock: {{cidr: {cidr}}}}}]\n    ports: [{{port: 8099}}]\n"
        )
    };
    // Their grants name the address, but their policy does not.
    kube::apply(home.path(), &policy("192.0.2.0/24"));
    eventually(fetch, |got| got.contains("HttpRequestDenied")).await;
    let refused = socket().await;
    assert!(
        refused.contains("error:") && !refused.contains("from the internet"),
        "{refused}"
    );
    // Named by both, the address is reached again.
    kube::apply(home.path(), &policy(&format!("{}/32", internet.ip)));
    eventually(fetch, |got| got.contains("from the internet")).await;
    assert!(socket().await.contains("from the internet"));
}
