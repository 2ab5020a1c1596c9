//! What berth counts, as people read it: every `/metrics` page checked by
//! Prometheus's own promtool, a real Prometheus scraping the daemon and
//! answering PromQL, and `kubectl top` against metrics.k8s.io.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::kube::{apply, build_image, kubectl, wait_ready};
use berth_tests::{BerthRun, berth, free_port, ok, send, wait_for_port};

/// A Deployment of the hello guest (image `web:1`) behind a Service.
fn web(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: app, image: 'web:1', imagePullPolicy: Never}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n---\n"
    )
}

/// The address a server announced with `berth: metrics on http://ADDR/metrics`.
fn metrics_url(run: &BerthRun) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(url) = run
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("berth: metrics on "))
        {
            return url.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics line: {}",
            run.stdout()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `promtool check metrics` on `page`: Prometheus's own parser and lint.
fn promtool_accepts(page: &str, which: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; tests/prepare.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejects {which}:\n{}{}\n--- the page:\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (its name and labels as written) on `page`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn hit(ingress: &str, host: &str, n: usize) {
    for _ in 0..n {
        let reply = send("GET", &format!("{ingress}/"), &[("host", host)], Vec::new()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test]
async fn every_metrics_page_berth_serves_passes_promtool_and_counts_what_happened() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(berth_tests::guests::HELLO), "web:1");
    let daemon =
        BerthRun::start_command(home.path(), &["daemon", "--metrics-listen", "127.0.0.1:0"]);
    let ingress = daemon.ingress();
    let scrape = metrics_url(&daemon);
    apply(home.path(), &web("web", 2));
    wait_ready(home.path(), 2);
    hit(&ingress, "web.localhost", 25).await;
    let missing = send(
        "GET",
        &format!("{ingress}/"),
        &[("host", "nothing.localhost")],
        Vec::new(),
    )
    .await;
    assert_eq!(missing.status, 404);

    // The loopback listener, for scrapers: no auth, the text format.
    let page = send("GET", &scrape, &[], Vec::new()).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        page.headers
    );
    let page = page.text();
    promtool_accepts(&page, "the daemon's --metrics-listen page");
    assert_eq!(
        sample(
            &page,
            r#"berth_service_requests_total{namespace="default",service="web",method="GET",code="2xx"}"#
        ),
        Some(25.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            r#"berth_service_request_duration_seconds_count{namespace="default",service="web"}"#
        ),
        Some(25.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"berth_pods{namespace="default",phase="Running"}"#),
        Some(2.0),
        "{page}"
    );
    // Each replica's share, and the guest CPU they used.
    let served: f64 = page
        .lines()
        .filter(|l| l.starts_with("berth_pod_requests_total{namespace=\"default\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(served, 25.0, "{page}");
    assert!(page.contains("container_cpu_usage_seconds_total{namespace=\"default\",pod=\"web-"));
    assert!(page.contains("process_resident_memory_bytes "));
    // The control loop's own.
    assert!(
        sample(&page, "berth_controller_pass_duration_seconds_count").unwrap() > 0.0,
        "{page}"
    );
    assert!(page.contains(r#"berth_controller_queue_depth{queue="deployments"} "#));
    assert!(page.contains("berth_controller_queue_wait_seconds_bucket{le="));
    assert!(
        !page.contains("nothing"),
        "an unknown host is no label value: {page}"
    );

    // OpenMetrics when asked for.
    let open = send(
        "GET",
        &scrape,
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        Vec::new(),
    )
    .await;
    assert!(
        open.header("content-type")
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{:?}",
        open.headers
    );
    let open = open.text();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE berth_service_requests counter"),
        "{open}"
    );

    // The API's page: the same, behind the API's auth.
    let through_api = kubectl(home.path(), &["get", "--raw", "/metrics"]);
    assert!(through_api.success, "{}", through_api.stderr);
    promtool_accepts(&through_api.stdout, "the Kubernetes API's /metrics");
    assert!(through_api.stdout.contains("berth_service_requests_total{"));
    let api = home.path().join("kubeconfig");
    let kubeconfig = std::fs::read_to_string(&api).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    let anonymous = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{server}/metrics"))
        .output()
        .expect("curl (tests/prepare.sh installs it)");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}

#[tokio::test]
async fn berth_run_and_the_registry_serve_metrics_promtool_accepts() {
    let home = tempfile::tempdir().unwrap();
    let run = BerthRun::start_in(
        home.path(),
        berth_tests::guests::HELLO,
        &["--metrics", "127.0.0.1:0"],
    );
    let scrape = metrics_url(&run);
    for _ in 0..7 {
        assert_eq!(send("GET", &run.url, &[], Vec::new()).await.status, 200);
    }
    let page = send("GET", &scrape, &[], Vec::new()).await.text();
    promtool_accepts(&page, "berth run --metrics");
    assert_eq!(
        sample(
            &page,
            r#"berth_service_requests_total{namespace="",service="hello",method="GET",code="2xx"}"#
        ),
        Some(7.0),
        "{page}"
    );
    let cpu = sample(
        &page,
        r#"container_cpu_usage_seconds_total{container="hello"}"#,
    )
    .expect("the guest's CPU time");
    assert!(cpu > 0.0, "{page}");

    let registry_dir = tempfile::tempdir().unwrap();
    let registry = berth_tests::registry_serve(&registry_dir.path().join("registry"), &[]);
    // A push, so bytes and blobs have something to count.
    build_image(
        home.path(),
        Path::new(berth_tests::guests::HELLO),
        "hello:1",
    );
    let remote = format!("{}/hello:1", registry.url.trim_start_matches("http://"));
    ok(berth(home.path(), &["tag", "hello:1", &remote]));
    ok(berth(home.path(), &["push", &remote]));
    let page = send("GET", &format!("{}/metrics", registry.url), &[], Vec::new())
        .await
        .text();
    promtool_accepts(&page, "berth registry serve's /metrics");
    let received = sample(&page, "berth_registry_blob_received_bytes_total").unwrap();
    let size = std::fs::metadata(berth_tests::guests::HELLO).unwrap().len() as f64;
    assert!(received >= size, "{received} < {size}: {page}");
    assert!(
        sample(&page, "berth_registry_blobs").unwrap() >= 2.0,
        "{page}"
    );
    assert!(sample(&page, "berth_registry_blobs_pushed_total").unwrap() >= 2.0);
}

/// Prometheus (Debian's) started with a scrape config for berth, on a
/// free port, with its data in `dir`; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: berth\n  static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "prometheus is needed (Debian package prometheus; tests/prepare.sh installs it)",
            );
        assert!(
            wait_for_port(&address, Duration::from_secs(30)),
            "prometheus did not listen on {address}"
        );
        Prometheus {
            child,
            url: format!("http://{address}"),
        }
    }

    /// The vector a PromQL query returns, as (labels, value).
    async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            promql
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let reply = send("GET", &url, &[], Vec::new()).await;
        // Listening is not ready: Prometheus answers 503 while it starts.
        if reply.status == 503 {
            return Vec::new();
        }
        let answer: serde_json::Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", reply.status, reply.text()));
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"].clone(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn prometheus_scrapes_berth_and_promql_gives_each_service_s_request_rate() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(berth_tests::guests::HELLO), "web:1");
    let daemon =
        BerthRun::start_command(home.path(), &["daemon", "--metrics-listen", "127.0.0.1:0"]);
    let ingress = daemon.ingress();
    let target = metrics_url(&daemon)
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    apply(home.path(), &(web("a", 1) + &web("b", 1)));
    wait_ready(home.path(), 2);
    let data = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(data.path(), &target);
    // Scraped before the burst, so the burst is an increase it sees.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("up{job=\"berth\"} == 1").await.is_empty() {
        assert!(Instant::now() < deadline, "prometheus never scraped berth");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Twice as many to `a` as to `b`, at the same time.
    let (a, b) = (ingress.clone(), ingress.clone());
    tokio::join!(hit(&a, "a.localhost", 200), hit(&b, "b.localhost", 100));
    // The counters as Prometheus has them, once a scrape after the burst is in.
    let totals = "sum by (service) (berth_service_requests_total{code=\"2xx\"})";
    let deadline = Instant::now() + Duration::from_secs(30);
    let by_service = loop {
        let found: std::collections::BTreeMap<String, f64> = prometheus
            .query(totals)
            .await
            .into_iter()
            .map(|(m, v)| (m["service"].as_str().unwrap().to_owned(), v))
            .collect();
        if found.get("a") == Some(&200.0) && found.get("b") == Some(&100.0) {
            break found;
        }
        assert!(Instant::now() < deadline, "totals: {found:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(by_service.len(), 2, "{by_service:?}");
    // The rate per service over the last minute: a's twice b's.
    let rates: std::collections::BTreeMap<String, f64> = prometheus
        .query("sum by (service) (rate(berth_service_requests_total[1m]))")
        .await
        .into_iter()
        .map(|(m, v)| (m["service"].as_str().unwrap().to_owned(), v))
        .collect();
    let (ra, rb) = (rates["a"], rates["b"]);
    assert!(ra > 0.0 && rb > 0.0, "{rates:?}");
    assert!(
        (ra / rb - 2.0).abs() < 0.2,
        "a's rate should be twice b's: {rates:?}"
    );
}

#[test]
fn kubectl_top_shows_a_spinning_guest_near_its_cpu_limit_and_an_idle_one_near_zero() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(berth_tests::guests::HELLO), "web:1");
    build_image(home.path(), Path::new(berth_tests::guests::TOOL), "tool:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--metrics-resolution", "2s"]);
    apply(
        home.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: idle, labels: {app: idle}}\nspec:\n  containers: [{name: web, image: 'web:1'}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: spin, labels: {app: spin}}\nspec:\n  containers:\n  - {name: work, image: 'tool:1', args: [spin], resources: {limits: {cpu: 500m}}}\n",
    );
    wait_ready(home.path(), 2);
    // Two samples, then the figures of a whole window.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        std::thread::sleep(Duration::from_secs(2));
        let top = kubectl(home.path(), &["top", "pods", "--no-headers"]);
        let lines: Vec<Vec<String>> = top
            .stdout
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect();
        if top.success && lines.len() == 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl top pods: {}{}",
            top.stdout,
            top.stderr
        );
    };
    let millicores = |pod: &str| -> u64 {
        let line = lines.iter().find(|l| l[0] == pod).unwrap();
        line[1].trim_end_matches('m').parse().unwrap()
    };
    let (spin, idle) = (millicores("spin"), millicores("idle"));
    assert!((350..=560).contains(&spin), "spin uses {spin}m: {lines:?}");
    assert!(idle <= 20, "idle uses {idle}m: {lines:?}");
    // By label and per container, as on a cluster.
    let one = kubectl(
        home.path(),
        &[
            "top",
            "pod",
            "-l",
            "app=spin",
            "--containers",
            "--no-headers",
        ],
    );
    assert!(one.success, "{}", one.stderr);
    assert!(one.stdout.starts_with("spin"), "{}", one.stdout);
    assert!(one.stdout.contains("work"), "{}", one.stdout);
    let nodes = kubectl(home.path(), &["top", "nodes", "--no-headers"]);
    assert!(nodes.success, "{}", nodes.stderr);
    let node: Vec<&str> = nodes.stdout.split_whitespace().collect();
    assert_eq!(node[0], "berth", "{}", nodes.stdout);
    let node_cpu: u64 = node[1].trim_end_matches('m').parse().unwrap();
    assert!(
        node_cpu >= 350,
        "the machine runs the spinner: {}",
        nodes.stdout
    );
}

/// A wasm service whose requests may ask too much, and a Linux container
/// whose child processes do, each under a memory limit.
const HOGS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: hog}
spec:
  replicas: 1
  selector: {matchLabels: {app: hog}}
  template:
    metadata: {labels: {app: hog}}
    spec:
      containers:
      - {name: app, image: 'hog:1', imagePullPolicy: Never, resources: {limits: {memory: 64Mi}}}
---
apiVersion: v1
kind: Service
metadata: {name: hog}
spec:
  selector: {app: hog}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  containers:
  - name: sh
    image: busybox:1
    resources: {limits: {memory: 32Mi}}
    command: [sh, -c, 'for i in 1 2; do dd if=/dev/zero of=/dev/null bs=64M count=1; done; echo survived; sleep 600']
"#;

#[tokio::test]
async fn out_of_memory_kills_are_counted_per_container_wasm_and_linux() {
    let home = tempfile::tempdir().unwrap();
    build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "hog:1",
    );
    berth_tests::busybox::load(home.path(), "busybox:1");
    let daemon =
        BerthRun::start_command(home.path(), &["daemon", "--metrics-listen", "127.0.0.1:0"]);
    let ingress = daemon.ingress();
    let scrape = metrics_url(&daemon);
    apply(home.path(), HOGS);
    wait_ready(home.path(), 2);
    // Three requests past the guest's limit fail; the container lives on.
    for _ in 0..3 {
        let reply = send(
            "GET",
            &format!("{ingress}/alloc?mb=256"),
            &[("host", "hog.localhost")],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, 500, "{}", reply.text());
    }
    let fine = send(
        "GET",
        &format!("{ingress}/alloc?mb=8"),
        &[("host", "hog.localhost")],
        Vec::new(),
    )
    .await;
    assert_eq!(fine.status, 200, "{}", fine.text());
    // Two of the shell's children are killed by the kernel; the shell
    // goes on, so the container does not restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok(berth(home.path(), &["logs", "greedy"]))
        .stdout
        .contains("survived")
    {
        assert!(Instant::now() < deadline, "the shell never went on");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = send("GET", &scrape, &[], Vec::new()).await.text();
    promtool_accepts(&page, "the daemon's page after OOM kills");
    assert_eq!(
        sample(
            &page,
            r#"container_oom_events_total{namespace="default",pod="greedy",container="sh"}"#
        ),
        Some(2.0),
        "{page}"
    );
    let wasm: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with(r#"container_oom_events_total{namespace="default",pod="hog-"#))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(wasm, [3.0], "{page}");
    let restarts = ok(kubectl(
        home.path(),
        &[
            "get",
            "pod",
            "greedy",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
    ));
    assert_eq!(restarts.stdout, "0");
}
