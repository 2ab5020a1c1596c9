//! `berth daemon` with `apply`, `get` and `delete`: declarative state that
//! is all-or-nothing and survives the daemon being killed.

use std::path::Path;

use berth_tests::kube::{build_image, pods, wait_for_named, wait_for_pod, wait_ready, write};
use berth_tests::{BerthRun, Load, berth, ok, process_running};

fn daemon(home: &Path) -> BerthRun {
    BerthRun::start_command(home, &["daemon"])
}

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {greeting: hello, mode: prod}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: web:1
        resources: {limits: {memory: 64Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
"#;

/// Whether a `get -A` listed nothing but the `default` namespace, which
/// always exists.
fn only_default(table: &str) -> bool {
    table.is_empty()
        || table
            .lines()
            .skip(1)
            .all(|line| line.starts_with("default ") && line.contains("Active"))
}

#[test]
fn apply_get_and_delete_manage_declared_objects() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    use std::os::unix::fs::PermissionsExt as _;
    let socket = home.path().join("berth.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may drive berth");
    // Secrets live in the store: its directory and files are the owner's.
    let mode_of = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode_of(home.path()), 0o700);
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(mode_of(&home.path().join(file)), 0o600, "{file}");
    }

    let files = tempfile::tempdir().unwrap();
    let shop = write(files.path(), "shop.yaml", SHOP);
    let applied = ok(berth(home.path(), &["apply", "-f", &shop]));
    assert_eq!(
        applied.stdout,
        "namespace/shop created\nconfigmap/settings created\ndeployment.apps/web created\nservice/web created\n"
    );
    let again = ok(berth(
        home.path(),
        &["apply", "-f", files.path().to_str().unwrap()],
    ));
    assert!(
        again.stdout.lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        again.stdout
    );

    let table = ok(berth(home.path(), &["get", "deploy", "-n", "shop"]));
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE"),
        "{}",
        table.stdout
    );
    assert!(lines[1].starts_with("web    0/3"), "{}", table.stdout);
    let services = ok(berth(home.path(), &["get", "svc", "-A"]));
    assert!(
        services.stdout.contains("shop        web    NodePort"),
        "{}",
        services.stdout
    );
    assert!(
        services.stdout.contains("80:30080/TCP"),
        "{}",
        services.stdout
    );
    let configmaps = ok(berth(
        home.path(),
        &["get", "cm", "-n", "shop", "-l", "app!=x"],
    ));
    assert!(
        configmaps.stdout.contains("settings   2"),
        "{}",
        configmaps.stdout
    );

    let json = ok(berth(
        home.path(),
        &["get", "deployment", "web", "-n", "shop", "-o", "json"],
    ));
    let object: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(object["apiVersion"], "apps/v1");
    assert_eq!(object["metadata"]["generation"], 1);
    assert_eq!(object["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert_eq!(object["spec"]["strategy"]["type"], "RollingUpdate");
    let yaml = ok(berth(home.path(), &["get", "ns", "-o", "yaml"]));
    assert!(
        yaml.stdout.contains("kind: List") && yaml.stdout.contains("name: shop"),
        "{}",
        yaml.stdout
    );

    // Scaling by apply bumps the generation.
    let scaled = write(
        files.path(),
        "shop.yaml",
        &SHOP.replace("replicas: 3", "replicas: 5"),
    );
    let out = ok(berth(home.path(), &["apply", "-f", &scaled]));
    assert!(
        out.stdout.contains("deployment.apps/web configured"),
        "{}",
        out.stdout
    );
    let json = ok(berth(
        home.path(),
        &["get", "deployment", "web", "-n", "shop", "-o", "json"],
    ));
    let object: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(object["metadata"]["generation"], 2);

    let deleted = ok(berth(
        home.path(),
        &["delete", "deployment", "web", "-n", "shop"],
    ));
    assert_eq!(deleted.stdout, "deployment/web deleted\n");
    let gone = berth(home.path(), &["get", "deployment", "web", "-n", "shop"]);
    assert!(
        !gone.success && gone.stderr.contains("deployment web not found"),
        "{}",
        gone.stderr
    );

    // Deleting a file's objects: the deployment is gone already, which is
    // reported (and fails the command), and the rest is deleted.
    let out = berth(home.path(), &["delete", "-f", &shop]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("Deployment web not found"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("service/web deleted"), "{}", out.stdout);
    for kind in ["ns", "cm", "svc"] {
        let listed = ok(berth(home.path(), &["get", kind, "-A"]));
        assert!(
            only_default(&listed.stdout),
            "{kind} left: {}",
            listed.stdout
        );
    }
}

#[test]
fn a_bad_manifest_is_refused_whole_with_its_field_named() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    let files = tempfile::tempdir().unwrap();
    let cases = [
        (
            SHOP.replace(
                "image: web:1",
                "image: web:1\n        imagePulPolicy: Always",
            ),
            "Deployment web: spec.template.spec.containers[0].imagePulPolicy: unknown field `imagePulPolicy`",
        ),
        (
            SHOP.replace("memory: 64Mi", "memory: 64Mb"),
            "spec.template.spec.containers[0].resources.limits.memory: ",
        ),
        (
            SHOP.replace("        image: web:1\n", ""),
            "containers[0].image: an image is required",
        ),
        (
            SHOP.replace(
                "metadata: {labels: {app: web}}",
                "metadata: {labels: {app: other}}",
            ),
            "Deployment web: spec.selector: does not match spec.template.metadata.labels",
        ),
        (
            SHOP.replace(
                "kind: Namespace\nmetadata: {name: shop}",
                "kind: Namespace\nmetadata: {name: elsewhere}",
            ),
            "namespace shop does not exist",
        ),
    ];
    for (text, expected) in cases {
        let file = write(files.path(), "bad.yaml", &text);
        let out = berth(home.path(), &["apply", "-f", &file]);
        assert!(!out.success, "applied: {}", out.stdout);
        assert!(
            out.stderr.contains(expected),
            "wanted {expected:?} in {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains('\n') || out.stderr.lines().count() == 1,
            "{}",
            out.stderr
        );
        // Nothing of the file was applied, not even its good objects.
        for kind in ["ns", "cm", "deploy", "svc"] {
            let listed = ok(berth(home.path(), &["get", kind, "-A"]));
            assert!(
                only_default(&listed.stdout),
                "{kind} after a refused apply: {}",
                listed.stdout
            );
        }
    }
}

#[test]
fn objects_survive_the_daemon_being_killed() {
    let home = tempfile::tempdir().unwrap();
    let mut first = daemon(home.path());
    let files = tempfile::tempdir().unwrap();
    ok(berth(
        home.path(),
        &["apply", "-f", &write(files.path(), "shop.yaml", SHOP)],
    ));
    let before = ok(berth(
        home.path(),
        &["get", "deployment", "web", "-n", "shop", "-o", "json"],
    ));
    first.kill();

    // The socket is stale now; a new daemon takes it over.
    let _second = daemon(home.path());
    let after = ok(berth(
        home.path(),
        &["get", "deployment", "web", "-n", "shop", "-o", "json"],
    ));
    // The same object: uid, generation, creation time and spec (status and
    // resourceVersion move on as the new daemon's controllers act).
    let (before, after): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&before.stdout).unwrap(),
        serde_json::from_str(&after.stdout).unwrap(),
    );
    for field in ["uid", "generation", "creationTimestamp"] {
        assert_eq!(
            before["metadata"][field], after["metadata"][field],
            "{field}"
        );
    }
    assert_eq!(before["spec"], after["spec"]);

    // One daemon per data dir.
    let out = berth(home.path(), &["daemon"]);
    assert!(!out.success);
    assert!(out.stderr.contains("is already serving"), "{}", out.stderr);
}

/// Builds the echo guest as image `echo:1` in `home`.
fn build_echo(home: &Path) {
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(berth_tests::guests::ECHO, app.path().join("echo.wasm")).unwrap();
    std::fs::write(app.path().join("berth.toml"), "component = \"echo.wasm\"\n").unwrap();
    ok(berth(
        home,
        &["build", app.path().to_str().unwrap(), "-t", "echo:1"],
    ));
}

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: echo:1
        env:
        - name: GREETING
          valueFrom: {configMapKeyRef: {name: settings, key: greeting}}
        resources: {requests: {memory: MEMORY}}
"#;

#[tokio::test]
async fn a_deployment_runs_its_pods_scales_and_cleans_up() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let _daemon = BerthRun::start_command(
        home.path(),
        &["daemon", "--node", "a=4,4Gi", "--node", "b=4,4Gi"],
    );
    let files = tempfile::tempdir().unwrap();
    let web = write(
        files.path(),
        "web.yaml",
        &WEB.replace("REPLICAS", "3").replace("MEMORY", "64Mi"),
    );
    ok(berth(home.path(), &["apply", "-f", &web]));
    let running = wait_ready(home.path(), 3);
    for (name, endpoint) in &running {
        let reply = berth_tests::get(&format!("http://{endpoint}/")).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.contains(&format!("env: HOSTNAME={name}\n")),
            "{}",
            reply.body
        );
        assert!(
            reply.body.contains("env: GREETING=hello\n"),
            "{}",
            reply.body
        );
    }
    let table = ok(berth(home.path(), &["get", "pods"]));
    assert_eq!(
        table.stdout.matches("1/1     Running   0").count(),
        3,
        "{}",
        table.stdout
    );

    ok(berth(
        home.path(),
        &["scale", "deployment", "web", "--replicas", "5"],
    ));
    wait_ready(home.path(), 5);
    let deployments = ok(berth(home.path(), &["get", "deploy"]));
    assert!(
        deployments.stdout.contains("web    5/5     5            5"),
        "{}",
        deployments.stdout
    );

    ok(berth(home.path(), &["delete", "deployment", "web"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !pods(home.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pods left after the deployment went"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        ok(berth(home.path(), &["get", "rs", "-A"]))
            .stdout
            .is_empty()
    );
    // Their listeners closed and their directories removed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (_, endpoint) in &running {
        while std::net::TcpStream::connect(endpoint).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "{endpoint} still serves"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let left = std::fs::read_dir(home.path().join("pods")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "pod directories left behind");
}

#[test]
fn a_pod_that_fits_no_node_stays_pending_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--node", "small=2,1Gi"]);
    let files = tempfile::tempdir().unwrap();
    let web = write(
        files.path(),
        "web.yaml",
        &WEB.replace("REPLICAS", "1").replace("MEMORY", "2Gi"),
    );
    ok(berth(home.path(), &["apply", "-f", &web]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pods = pods(home.path());
        let message = pods
            .first()
            .map(|p| p["status"]["conditions"][0]["message"].clone());
        if message
            == Some(serde_json::json!(
                "0/1 nodes are available: 1 insufficient memory."
            ))
        {
            assert_eq!(pods[0]["status"]["phase"], "Pending");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pods:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let table = ok(berth(home.path(), &["get", "pods"]));
    assert!(table.stdout.contains("0/1     Pending"), "{}", table.stdout);
}

fn one_pod(image: &str, probes: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app}}\nspec:\n  selector: {{matchLabels: {{app: app}}}}\n  template:\n    metadata: {{labels: {{app: app}}}}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n{probes}"
    )
}

fn restarts(pod: &serde_json::Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_pod_that_fails_to_start_backs_off_longer_each_time() {
    let home = tempfile::tempdir().unwrap();
    // A component, but not an HTTP handler: every start fails.
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("empty.wasm");
    std::fs::write(&component, wat::parse_str("(component)").unwrap()).unwrap();
    build_image(home.path(), &component, "broken:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    let file = write(dir.path(), "app.yaml", &one_pod("broken:1", ""));
    ok(berth(home.path(), &["apply", "-f", &file]));

    let pod = wait_for_pod(home.path(), "CrashLoopBackOff with 4 restarts", |p| {
        p["status"]["reason"] == "CrashLoopBackOff" && restarts(p) >= 4
    });
    assert_eq!(pod["status"]["phase"], "Pending");
    let table = ok(berth(home.path(), &["get", "pods"]));
    assert!(
        table.stdout.contains("0/1     CrashLoopBackOff"),
        "{}",
        table.stdout
    );

    // The back-off doubles: 200ms, 400ms, 800ms…
    let name = pod["metadata"]["name"].as_str().unwrap();
    let described = ok(berth(home.path(), &["get", "events"]));
    let backoffs: Vec<&str> = described
        .stdout
        .lines()
        .filter(|l| l.contains(name) && l.contains("BackOff"))
        .collect();
    assert!(backoffs.len() >= 3, "{}", described.stdout);
    assert!(
        backoffs[0].contains("200ms")
            && backoffs[1].contains("400ms")
            && backoffs[2].contains("800ms"),
        "{backoffs:#?}"
    );
}

#[test]
fn a_pod_that_ran_long_enough_restarts_at_once_its_back_off_forgotten() {
    let home = tempfile::tempdir().unwrap();
    build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "misbehave:1",
    );
    // A back-off of five minutes, forgotten after one second of running.
    let _daemon = BerthRun::start_command(
        home.path(),
        &["daemon", "--backoff-base", "5m", "--backoff-reset", "1s"],
    );
    // Each run lasts at least two seconds before its liveness probe fails.
    let dies_late = "        livenessProbe: {httpGet: {path: /trap, port: 8080}, initialDelaySeconds: 2, periodSeconds: 1, failureThreshold: 1}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.yaml", &one_pod("misbehave:1", dies_late));
    ok(berth(home.path(), &["apply", "-f", &file]));

    // Without the reset the second restart would wait five minutes.
    let pod = wait_for_pod(home.path(), "restarted three times", |p| restarts(p) >= 3);
    let name = pod["metadata"]["name"].as_str().unwrap();
    let events = ok(berth(home.path(), &["get", "events"])).stdout;
    assert!(
        !events
            .lines()
            .any(|l| l.contains(name) && l.contains("BackOff")),
        "{events}"
    );
}

#[test]
fn probes_gate_readiness_and_restart_what_fails_liveness() {
    let home = tempfile::tempdir().unwrap();
    build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "misbehave:1",
    );
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    let dir = tempfile::tempdir().unwrap();

    // Readiness on a path that fails: running, never Ready, never restarted.
    let unready =
        "        readinessProbe: {httpGet: {path: /trap, port: 8080}, periodSeconds: 1}\n";
    ok(berth(
        home.path(),
        &[
            "apply",
            "-f",
            &write(dir.path(), "a.yaml", &one_pod("misbehave:1", unready)),
        ],
    ));
    let pod = wait_for_pod(home.path(), "running", |p| {
        p["status"]["phase"] == "Running"
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let pod_now = pods(home.path()).remove(0);
    assert_eq!(pod_now["metadata"]["name"], pod["metadata"]["name"]);
    assert_eq!(pod_now["status"]["containerStatuses"][0]["ready"], false);
    assert_eq!(restarts(&pod_now), 0);
    ok(berth(home.path(), &["delete", "deployment", "app"]));

    // Liveness on the same path: restarted again and again.
    let dead = "        livenessProbe: {httpGet: {path: /trap, port: 8080}, periodSeconds: 1, failureThreshold: 1}\n";
    ok(berth(
        home.path(),
        &[
            "apply",
            "-f",
            &write(dir.path(), "b.yaml", &one_pod("misbehave:1", dead)),
        ],
    ));
    wait_for_pod(home.path(), "restarted twice by its liveness probe", |p| {
        restarts(p) >= 2
    });
}

fn versioned(version: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: echo:1\n        env: [{{name: VERSION, value: {version}}}]\n        readinessProbe: {{httpGet: {{path: /, port: 80}}, initialDelaySeconds: 1}}\n"
    )
}

/// The VERSION every ready pod answers with.
async fn versions(home: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    for (_, endpoint) in wait_ready(home, 3) {
        let reply = berth_tests::get(&format!("http://{endpoint}/")).await;
        let line = reply
            .body
            .lines()
            .find(|l| l.starts_with("env: VERSION="))
            .unwrap_or("")
            .to_owned();
        seen.push(line.trim_start_matches("env: VERSION=").to_owned());
    }
    seen
}

#[tokio::test]
async fn a_rollout_finishes_after_the_daemon_is_killed_and_undo_goes_back() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let dir = tempfile::tempdir().unwrap();
    let mut first = BerthRun::start_command(home.path(), &["daemon"]);
    ok(berth(
        home.path(),
        &[
            "apply",
            "-f",
            &write(dir.path(), "v1.yaml", &versioned("v1")),
        ],
    ));
    assert_eq!(versions(home.path()).await, ["v1", "v1", "v1"]);

    // Start the rollout to v2 and kill the daemon in the middle of it: each
    // new pod takes a second to turn ready, so the rollout takes seconds.
    ok(berth(
        home.path(),
        &[
            "apply",
            "-f",
            &write(dir.path(), "v2.yaml", &versioned("v2")),
        ],
    ));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let midway = pods(home.path());
    assert!(midway.len() > 3, "the rollout had begun: {midway:#?}");
    first.kill();

    let _second = BerthRun::start_command(home.path(), &["daemon"]);
    let status = ok(berth(
        home.path(),
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    ));
    assert!(
        status
            .stdout
            .ends_with("deployment \"web\" successfully rolled out\n"),
        "{}",
        status.stdout
    );
    assert_eq!(versions(home.path()).await, ["v2", "v2", "v2"]);
    let history = ok(berth(
        home.path(),
        &["rollout", "history", "deployment/web"],
    ));
    assert_eq!(history.stdout.lines().count(), 4, "{}", history.stdout);

    let undo = ok(berth(home.path(), &["rollout", "undo", "deployment/web"]));
    assert_eq!(
        undo.stdout,
        "deployment.apps/web rolled back to revision 1\n"
    );
    ok(berth(
        home.path(),
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
    ));
    assert_eq!(versions(home.path()).await, ["v1", "v1", "v1"]);
    let history = ok(berth(
        home.path(),
        &["rollout", "history", "deployment/web"],
    ));
    // As on a cluster: revision 1's ReplicaSet is revision 3 now.
    let revisions: Vec<&str> = history
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{}", history.stdout);
    let missing = berth(
        home.path(),
        &["rollout", "undo", "deployment/web", "--to-revision", "9"],
    );
    assert!(
        !missing.success && missing.stderr.contains("no revision 9"),
        "{}",
        missing.stderr
    );
}

#[test]
fn create_describe_and_ps_show_what_runs() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let created = ok(berth(
        home.path(),
        &[
            "create",
            "deployment",
            "hi",
            "--image",
            "echo:1",
            "--replicas",
            "2",
        ],
    ));
    assert_eq!(created.stdout, "deployment.apps/hi created\n");
    let again = berth(
        home.path(),
        &["create", "deployment", "hi", "--image", "echo:1"],
    );
    assert!(
        !again.success && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    let running = wait_ready(home.path(), 2);

    let pod = ok(berth(home.path(), &["describe", "pod", &running[0].0]));
    assert!(
        pod.stdout.contains("Controlled By:      ReplicaSet/hi-"),
        "{}",
        pod.stdout
    );
    assert!(
        pod.stdout
            .contains(&format!("Endpoint:       http://{}/", running[0].1)),
        "{}",
        pod.stdout
    );
    assert!(
        pod.stdout.contains("Scheduled") && pod.stdout.contains("Started"),
        "{}",
        pod.stdout
    );
    let deployment = ok(berth(home.path(), &["describe", "deploy", "hi"]));
    assert!(
        deployment
            .stdout
            .contains("2 desired | 2 updated | 2 total | 2 available | 0 unavailable"),
        "{}",
        deployment.stdout
    );
    assert!(
        deployment.stdout.contains("ScalingReplicaSet"),
        "{}",
        deployment.stdout
    );

    let ps = ok(berth(home.path(), &["ps"]));
    for (name, endpoint) in &running {
        let line = ps
            .stdout
            .lines()
            .find(|l| l.contains(name.as_str()))
            .unwrap_or_default();
        assert!(
            line.contains("echo:1")
                && line.contains("Up (ready)")
                && line.contains(endpoint.as_str()),
            "{}",
            ps.stdout
        );
    }
}

#[test]
fn describe_tells_every_kind_in_prose_and_keeps_secrets() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {greeting: hello}\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata: {name: sec}\nstringData: {password: hunter2}\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        image: echo:1\n        resources: {limits: {cpu: 250m}}\n        env: [{name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}]\n        readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: http, port: 80, nodePort: 31234}]\n";
    ok(berth(
        home.path(),
        &["apply", "-f", &write(dir.path(), "all.yaml", manifest)],
    ));
    let running = wait_ready(home.path(), 2);
    let describe = |what: &[&str]| {
        let mut args = vec!["describe"];
        args.extend_from_slice(what);
        // Columns as single spaces, so the checks do not count padding.
        let out = ok(berth(home.path(), &args)).stdout;
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let service = describe(&["service", "web"]);
    for expected in [
        "Type: NodePort",
        "NodePort: http 31234/TCP",
        "Session Affinity: None",
    ] {
        assert!(service.contains(expected), "{expected:?} in\n{service}");
    }
    let endpoints = service
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_default();
    for (pod, _) in &running {
        assert!(endpoints.contains(pod.as_str()), "{service}");
    }

    let deployment = describe(&["deployment", "web"]);
    for expected in [
        "RollingUpdateStrategy: 25% max unavailable, 25% max surge",
        "cpu: 250m",
        "Readiness: http-get http://:80/ delay=0s timeout=1s period=1s #success=1 #failure=3",
        "PASSWORD: <set to the key 'password' in secret 'sec'>",
        "(2/2 replicas created)",
    ] {
        assert!(
            deployment.contains(expected),
            "{expected:?} in\n{deployment}"
        );
    }
    let replica_set = deployment
        .lines()
        .find_map(|l| l.strip_prefix("NewReplicaSet:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let rs = describe(&["rs", &replica_set]);
    for expected in [
        "Controlled By: Deployment/web",
        "Replicas: 2 current / 2 desired",
        "Pods Status: 2 Running / 0 Waiting / 0 Succeeded / 0 Failed",
        "SuccessfulCreate",
    ] {
        assert!(rs.contains(expected), "{expected:?} in\n{rs}");
    }

    let config_map = describe(&["configmap", "cfg"]);
    assert!(
        config_map.contains("greeting:\n----\nhello\n"),
        "{config_map}"
    );
    // A secret shows its keys and sizes, never its values, in describe or
    // in what the API hands back.
    let secret = describe(&["secret", "sec"]);
    assert!(secret.contains("password: 7 bytes"), "{secret}");
    let yaml = ok(berth(home.path(), &["get", "secret", "sec", "-o", "yaml"])).stdout;
    for shown in [&secret, &yaml] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    let namespace = describe(&["namespace", "default"]);
    assert!(namespace.contains("Status: Active"), "{namespace}");
}

#[tokio::test]
async fn up_builds_applies_serves_and_cleans_up_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let app = project.path().join("echo");
    std::fs::create_dir(&app).unwrap();
    std::fs::copy(berth_tests::guests::ECHO, app.join("echo.wasm")).unwrap();
    std::fs::write(app.join("berth.toml"), "component = \"echo.wasm\"\n").unwrap();
    write(
        project.path(),
        "app.yaml",
        &one_pod("echo:latest", "").replace(
            "metadata: {name: app}\nspec:\n",
            "metadata: {name: app}\nspec:\n  replicas: 2\n",
        ),
    );
    // A daemon in the same home runs beside `up`, which keeps its own state,
    // socket, API and kubeconfig.
    let _daemon = daemon(home.path());
    let mut up = BerthRun::start_command(home.path(), &["up", project.path().to_str().unwrap()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !up.stdout().contains("berth up: 2 pods ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            up.stdout(),
            up.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        up.stdout().contains("deployment/app applied"),
        "{}",
        up.stdout()
    );
    let kubeconfig = up
        .stdout()
        .lines()
        .find_map(|l| {
            l.split_once("(KUBECONFIG=")
                .map(|(_, k)| k.trim_end_matches(')').to_owned())
        })
        .expect("up says where its kubeconfig is");
    let up_home = Path::new(&kubeconfig).parent().unwrap().to_owned();
    assert!(up_home.starts_with(home.path().join("up")), "{kubeconfig}");
    // berth's commands reach `up` through the KUBECONFIG it printed; the
    // daemon's own socket shows none of its pods.
    let listed = berth_tests::berth_with(
        home.path(),
        &[("KUBECONFIG", &kubeconfig)],
        &["get", "pods", "-o", "json"],
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(listed).stdout).unwrap();
    let endpoints: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| berth_tests::kube::is_ready(p))
        .map(|p| {
            p["status"]["endpoints"][p["spec"]["containers"][0]["name"].as_str().unwrap()]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(endpoints.len(), 2, "{listed:#}");
    assert!(pods(home.path()).is_empty());
    let reply = berth_tests::get(&format!("http://{}/", endpoints[0])).await;
    assert_eq!(reply.status, 200);

    up.terminate();
    let status = up
        .wait(std::time::Duration::from_secs(30))
        .expect("berth up exits");
    assert!(status.success(), "{status}: {}", up.log());
    assert!(
        std::net::TcpStream::connect(&endpoints[0]).is_err(),
        "pods stopped"
    );
    let left = std::fs::read_dir(up_home.join("pods")).map_or(0, |d| d.count());
    assert_eq!(left, 0);
}

#[test]
fn logs_show_what_a_container_wrote_now_before_and_as_it_goes() {
    let home = tempfile::tempdir().unwrap();
    build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "misbehave:1",
    );
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    let dir = tempfile::tempdir().unwrap();
    // Each liveness probe makes the guest panic (to its stderr) and fail:
    // the container restarts after every probe.
    let dead = "        livenessProbe: {httpGet: {path: /trap, port: 8080}, periodSeconds: 1, failureThreshold: 1}\n";
    ok(berth(
        home.path(),
        &[
            "apply",
            "-f",
            &write(dir.path(), "a.yaml", &one_pod("misbehave:1", dead)),
        ],
    ));
    let pod = wait_for_pod(home.path(), "restarted", |p| restarts(p) >= 1);
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let previous = ok(berth(home.path(), &["logs", &name, "--previous"]));
    assert!(
        previous.stdout.contains("guest asked to trap"),
        "{}",
        previous.stdout
    );

    // Following the latest run ends when the container starts again.
    let followed = ok(berth(home.path(), &["logs", "-f", &name]));
    assert!(
        followed.stdout.contains("guest asked to trap"),
        "{}",
        followed.stdout
    );

    let missing = berth(home.path(), &["logs", "nope"]);
    assert!(
        !missing.success && missing.stderr.contains("pods \"nope\" not found"),
        "{}",
        missing.stderr
    );
    let wrong = berth(home.path(), &["logs", &name, "-c", "other"]);
    assert!(
        !wrong.success
            && wrong
                .stderr
                .contains("container other is not valid for pod")
            && wrong.stderr.contains("(it has app)"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn a_cli_elsewhere_reaches_the_daemon_through_its_kubeconfig() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    // A client elsewhere (no socket in its home) with a copy of the
    // daemon's kubeconfig reaches it over HTTPS with its token.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("kubeconfig");
    std::fs::copy(home.path().join("kubeconfig"), &copy).unwrap();
    let kubeconfig = copy.to_str().unwrap();
    let remote = |kubeconfig: &str, args: &[&str]| {
        berth_tests::berth_with(elsewhere.path(), &[("KUBECONFIG", kubeconfig)], args)
    };
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: remote}\ndata: {a: b}\n",
    );
    let applied = ok(remote(kubeconfig, &["apply", "-f", &file]));
    assert_eq!(applied.stdout, "configmap/remote created\n");
    let listed = ok(remote(kubeconfig, &["get", "cm"]));
    assert!(listed.stdout.contains("remote"), "{}", listed.stdout);
    assert!(
        ok(berth(home.path(), &["get", "cm"]))
            .stdout
            .contains("remote")
    );

    // A wrong token is turned away, saying so.
    let text = std::fs::read_to_string(&copy).unwrap();
    let wrong = elsewhere.path().join("wrong");
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap();
    std::fs::write(&wrong, text.replace(token, "not-the-token-at-all-0000")).unwrap();
    let refused = remote(wrong.to_str().unwrap(), &["get", "cm"]);
    assert!(!refused.success);
    assert!(refused.stderr.contains("token"), "{}", refused.stderr);

    // Another cluster's kubeconfig is kubectl's business: berth keeps to
    // its own daemon (here, none).
    let other = elsewhere.path().join("other");
    std::fs::write(&other, text.replace("berth", "kind-dev")).unwrap();
    let local = remote(other.to_str().unwrap(), &["get", "cm"]);
    assert!(!local.success);
    assert!(
        local.stderr.contains("no berth daemon at"),
        "{}",
        local.stderr
    );
}

#[tokio::test]
async fn a_pod_takes_a_new_image_but_no_other_change() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(berth_tests::guests::HELLO), "app:1");
    build_image(home.path(), Path::new(berth_tests::guests::ECHO), "app:2");
    let _daemon = daemon(home.path());
    let dir = tempfile::tempdir().unwrap();
    let pod = |image: &str, env: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: solo}}\nspec:\n  containers:\n  - name: app\n    image: {image}\n    env: [{env}]\n"
        )
    };
    let file = write(dir.path(), "pod.yaml", &pod("app:1", ""));
    ok(berth(home.path(), &["apply", "-f", &file]));
    let first = wait_ready(home.path(), 1);
    // The same manifest again changes nothing, and restarts nothing.
    let again = ok(berth(home.path(), &["apply", "-f", &file]));
    assert!(
        again.stdout.contains("pod/solo unchanged"),
        "{}",
        again.stdout
    );
    // Another env is refused, whole.
    write(dir.path(), "pod.yaml", &pod("app:1", "{name: A, value: b}"));
    let refused = berth(home.path(), &["apply", "-f", &file]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("may not change"),
        "{}",
        refused.stderr
    );
    // A new image restarts the pod's container on it.
    write(dir.path(), "pod.yaml", &pod("app:2", ""));
    let changed = ok(berth(home.path(), &["apply", "-f", &file]));
    assert!(
        changed.stdout.contains("pod/solo configured"),
        "{}",
        changed.stdout
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = wait_ready(home.path(), 1);
        if now[0].1 != first[0].1 {
            let reply = berth_tests::get(&format!("http://{}/", now[0].1)).await;
            assert!(reply.body.contains("method: GET"), "{}", reply.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still on the old image"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pod = &pods(home.path())[0];
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(pod["status"]["containerStatuses"][0]["image"], "app:2");
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("daemon.log");
    let mut daemon = std::process::Command::new(berth_tests::berth_bin())
        .arg("daemon")
        .env("BERTH_HOME", home.path())
        .env("BERTH_INGRESS", "127.0.0.1:0")
        .env("BERTH_INGRESS_TLS", "127.0.0.1:0")
        .env("BERTH_API_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Up (its kubeconfig written), then asked to stop: it logs that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !home.path().join("kubeconfig").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let _ = daemon.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "the daemon logged: {text:?}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
}

#[test]
fn logs_of_a_completed_pod_show_what_it_wrote() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    let _daemon = daemon(home.path());
    let dir = tempfile::tempdir().unwrap();
    let pod = write(
        dir.path(),
        "done.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: sh, image: busybox:1, command: [sh, -c, 'echo finished']}\n",
    );
    ok(berth(home.path(), &["apply", "-f", &pod]));
    let completed = wait_for_pod(home.path(), "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        completed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let logs = ok(berth(home.path(), &["logs", "done"]));
    assert_eq!(logs.stdout, "finished\n");
    let listed = ok(berth(home.path(), &["get", "pods"]));
    assert!(listed.stdout.contains("Completed"), "{}", listed.stdout);
}

#[test]
fn a_manifest_of_megabytes_applies_whole() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    let dir = tempfile::tempdir().unwrap();
    // 25 ConfigMaps of 100 KB: 2.5 MB in one file, each object well within
    // Kubernetes' limits.
    let value = "x".repeat(100 * 1024);
    let manifest: String = (0..25)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big-{i}}}\ndata: {{v: {value}}}\n---\n"
            )
        })
        .collect();
    assert!(manifest.len() > 2_500_000);
    let file = write(dir.path(), "big.yaml", &manifest);
    let applied = ok(berth(home.path(), &["apply", "-f", &file]));
    assert_eq!(applied.stdout.lines().count(), 25, "{}", applied.stdout);
    let listed = ok(berth(home.path(), &["get", "cm"]));
    assert!(listed.stdout.contains("big-24"), "{}", listed.stdout);
}

#[test]
fn logs_follow_a_container_across_a_rotation_without_losing_lines() {
    use std::io::BufRead as _;
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    let _daemon = daemon(home.path());
    let dir = tempfile::tempdir().unwrap();
    // About 12 MB of numbered lines: past the 10 MiB at which the log
    // rotates, then quiet.
    let pod = write(
        dir.path(),
        "chatty.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: chatty}\nspec:\n  containers:\n  - {name: sh, image: busybox:1, command: [sh, -c, 'i=0; while [ $i -lt 400000 ]; do echo \"line $i ................\"; i=$((i+1)); done; echo end; sleep 3600']}\n",
    );
    ok(berth(home.path(), &["apply", "-f", &pod]));
    wait_for_pod(home.path(), "running", |p| {
        p["status"]["phase"] == "Running"
    });
    let mut follow = std::process::Command::new(berth_tests::berth_bin())
        .args(["logs", "-f", "chatty"])
        .env("BERTH_HOME", home.path())
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut expected: Option<u64> = None;
    let mut seen = 0u64;
    for line in std::io::BufReader::new(follow.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "end" {
            break;
        }
        let n: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        if let Some(want) = expected {
            assert_eq!(n, want, "a line lost at {want}");
        }
        expected = Some(n + 1);
        seen += 1;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        expected,
        Some(400_000),
        "followed to the last line ({seen} seen)"
    );
    // Each pod's logs/<container>/<run>.log, and now <run>.log.1 beside it.
    let rotated = std::fs::read_dir(home.path().join("pods"))
        .unwrap()
        .flatten()
        .any(|pod| pod.path().join("logs/sh/0.log.1").is_file());
    assert!(rotated, "the log rotated while it was followed");
}

#[test]
fn a_wasm_command_runs_in_a_pod_as_a_worker_with_its_args_logs_and_exit_code() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(berth_tests::guests::TOOL), "tool:1");
    let _daemon = daemon(home.path());
    let dir = tempfile::tempdir().unwrap();
    let pods_yaml = write(
        dir.path(),
        "workers.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  containers: [{name: step, image: "tool:1", args: [args, one, two]}]
---
apiVersion: v1
kind: Pod
metadata: {name: failed}
spec:
  restartPolicy: Never
  containers: [{name: step, image: "tool:1", args: [exit, "3"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: named}
spec:
  restartPolicy: Never
  containers: [{name: step, image: "tool:1", command: [mytool, env], args: [MODE], env: [{name: MODE, value: batch}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  restartPolicy: Never
  containers:
  - {name: step, image: "tool:1", args: [alloc, "64"], resources: {limits: {memory: 16Mi}}}
"#,
    );
    ok(berth(home.path(), &["apply", "-f", &pods_yaml]));
    let terminated =
        |p: &serde_json::Value| p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
    let done = wait_for_named(home.path(), "done", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(terminated(&done)["reason"], "Completed");
    let logs = ok(berth(home.path(), &["logs", "done"]));
    assert_eq!(logs.stdout, "step args one two\n");
    let failed = wait_for_named(home.path(), "failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(failed["status"]["reason"], "Error", "{failed:#}");
    let logs = ok(berth(home.path(), &["logs", "failed"]));
    assert!(logs.stdout.contains("leaving with 3"), "{}", logs.stdout);
    wait_for_named(home.path(), "named", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let logs = ok(berth(home.path(), &["logs", "named"]));
    assert_eq!(logs.stdout, "MODE=batch\n");
    // Past its memory limit: OOMKilled, as Kubernetes says it, and why.
    let greedy = wait_for_named(home.path(), "greedy", |p| p["status"]["phase"] == "Failed");
    assert_eq!(greedy["status"]["reason"], "OOMKilled", "{greedy:#}");
    let logs = ok(berth(home.path(), &["logs", "greedy"]));
    assert!(
        logs.stdout.contains("memory limit of 16Mi"),
        "{}",
        logs.stdout
    );

    // A worker that keeps failing restarts with back-off, as a container.
    let restarting = write(
        dir.path(),
        "restarting.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: again}\nspec:\n  containers: [{name: w, image: \"tool:1\", args: [exit, \"1\"]}]\n",
    );
    ok(berth(home.path(), &["apply", "-f", &restarting]));
    wait_for_named(home.path(), "again", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
}

/// The error of a `berth daemon` that must not start (killed, and the test
/// failed, if it is still running after a while).
fn daemon_refused(home: &Path, args: &[&str]) -> String {
    let mut child = std::process::Command::new(berth_tests::berth_bin())
        .arg("daemon")
        .args(args)
        .env("BERTH_HOME", home)
        .env("BERTH_INGRESS", "127.0.0.1:0")
        .env("BERTH_INGRESS_TLS", "127.0.0.1:0")
        .env("BERTH_API_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth daemon started when it should have refused");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// Every file of `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    berth_tests::files_under(dir)
        .into_iter()
        .filter(|(path, _)| {
            std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
        .map(|(path, _)| path.display().to_string())
        .collect()
}

#[test]
fn secrets_are_encrypted_at_rest_and_a_rotated_key_seals_them_again() {
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let value = "correct-horse-battery-staple";
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    let mut first = daemon(home.path());
    let config = home.path().join("encryption.yaml");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is the owner's alone");
    ok(berth_tests::kube::kubectl(
        home.path(),
        &[
            "create",
            "secret",
            "generic",
            "creds",
            &format!("--from-literal=password={value}"),
        ],
    ));
    let read = |home: &Path| {
        ok(berth_tests::kube::kubectl(
            home,
            &["get", "secret", "creds", "-o", "jsonpath={.data.password}"],
        ))
        .stdout
    };
    assert_eq!(read(home.path()), encoded);
    first.terminate();
    first.wait(std::time::Duration::from_secs(30)).unwrap();
    // Neither the database nor its journals hold the value, in either form.
    for needle in [value, encoded.as_str()] {
        assert_eq!(
            files_holding(home.path(), needle.as_bytes()),
            Vec::<String>::new()
        );
    }

    // Rotation: a new key listed first; the restart seals every Secret with it.
    let text = std::fs::read_to_string(&config).unwrap();
    let new_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let rotated = text.replacen(
        "      keys:\n",
        &format!("      keys:\n      - name: key2\n        secret: {new_key}\n"),
        1,
    );
    assert_ne!(rotated, text, "{text}");
    std::fs::write(&config, &rotated).unwrap();
    let mut second = daemon(home.path());
    assert!(
        second.wait_for_log("stored 1 objects again", std::time::Duration::from_secs(10)),
        "{}",
        second.log()
    );
    assert_eq!(read(home.path()), encoded);
    second.terminate();
    second.wait(std::time::Duration::from_secs(30)).unwrap();

    // The old key dropped: still read, as it was sealed with the new one.
    let only_new = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: key2\n        secret: {new_key}\n"
    );
    std::fs::write(&config, &only_new).unwrap();
    let mut third = daemon(home.path());
    assert_eq!(read(home.path()), encoded);
    third.terminate();
    third.wait(std::time::Duration::from_secs(30)).unwrap();

    // Without the key its Secrets were sealed with, the daemon will not
    // start, and says why; the store is as it was.
    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    std::fs::write(&config, only_new.replace(&new_key, &other)).unwrap();
    let refused = daemon_refused(home.path(), &[]);
    assert!(
        refused.contains("default/creds") && refused.contains("key2"),
        "{refused}"
    );
    // A key file others may read is refused too.
    std::fs::write(&config, &only_new).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = daemon_refused(home.path(), &[]);
    assert!(refused.contains("chmod 600"), "{refused}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut fourth = daemon(home.path());
    assert_eq!(read(home.path()), encoded);

    // A daemon taking over without the key finds out while the one
    // serving still serves, and leaves it serving.
    std::fs::write(&config, only_new.replace(&new_key, &other)).unwrap();
    let refused = daemon_refused(home.path(), &["--take-over"]);
    assert!(
        refused.contains("default/creds") && refused.contains("key2"),
        "{refused}"
    );
    // Longer than a daemon asked to stop takes to go.
    assert!(fourth.wait(std::time::Duration::from_secs(3)).is_none());
    assert_eq!(read(home.path()), encoded);
}

/// The pid the home's lease file names, once it names another than `not`.
fn lease_holder(home: &Path, not: u32) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(pid) = std::fs::read_to_string(home.join("daemon.pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .filter(|&pid| pid != not)
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no daemon took over from {not}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether process `pid` is gone (or a zombie: it has exited).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

fn wait_gone(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !gone(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon {pid} did not stop after handing over"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Kills whichever daemon holds the home when the test ends (the last one
/// is no child of the test's).
struct LastDaemon<'a>(&'a Path);

impl Drop for LastDaemon<'_> {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.0.join("daemon.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            && !gone(pid)
        {
            signal(pid, "-TERM");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !gone(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if !gone(pid) {
                signal(pid, "-KILL");
            }
        }
    }
}

fn pod_uids(home: &Path) -> Vec<(String, u64)> {
    let mut uids: Vec<(String, u64)> = pods(home)
        .iter()
        .map(|p| {
            (
                p["metadata"]["uid"].as_str().unwrap().to_owned(),
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0),
            )
        })
        .collect();
    uids.sort();
    uids
}

#[test]
fn hot_restarts_fail_no_request_and_keep_the_pods() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let mut first = daemon(home.path());
    let _last = LastDaemon(home.path());
    let files = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    let host_port = berth_tests::free_port();
    let web = WEB.replace("REPLICAS", "2").replace("MEMORY", "64Mi")
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n"
        // A Linux container: adopted by each new daemon, never restarted.
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  terminationGracePeriodSeconds: 1\n  initContainers:\n  - {name: side, image: 'busybox:1', restartPolicy: Always, command: [sh, -c, 'while true; do sleep 1; done; : sidecar-marker']}\n  containers:\n  - {name: box, image: 'busybox:1', command: [sh, -c, 'while true; do sleep 1; done; : handover-marker']}\n"
        // A host port: handed over with the rest.
        + &format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: published}}\nspec:\n  containers:\n  - {{name: p, image: 'echo:1', ports: [{{containerPort: 8080, hostPort: {host_port}, hostIP: 127.0.0.1}}]}}\n");
    ok(berth(
        home.path(),
        &["apply", "-f", &write(files.path(), "web.yaml", &web)],
    ));
    wait_ready(home.path(), 4);
    let boxed = process_running("handover-marker").expect("the Linux container runs");
    let sidecar = process_running("sidecar-marker").expect("its sidecar runs");
    // The Linux pod's way out (pasta), by the pid file each pod's has.
    let pastas = || -> Vec<String> {
        let mut pids: Vec<String> = std::fs::read_dir(home.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|pod| std::fs::read_to_string(pod.path().join("pasta.pid")).ok())
            .collect();
        pids.sort();
        pids
    };
    let pastas_before = pastas();
    assert_eq!(pastas_before.len(), 1, "{pastas_before:?}");
    let ingress = first.ingress();
    let address = ingress.trim_start_matches("http://").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Load::start(&address, "web.localhost", 1).stop().ok == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the service never answered"
        );
    }
    let before = pod_uids(home.path());

    let load = Load::start(&address, "web.localhost", 16);
    let published = Load::start(&format!("127.0.0.1:{host_port}"), "published", 4);
    let settle = || std::thread::sleep(std::time::Duration::from_millis(700));
    settle();
    // SIGHUP: the daemon starts its binary again, which takes over.
    let first_pid = first.pid();
    signal(first_pid, "-HUP");
    let second_pid = lease_holder(home.path(), first_pid);
    assert!(
        first.wait(std::time::Duration::from_secs(60)).is_some(),
        "the first daemon did not stop"
    );
    settle();
    // A new daemon started with --take-over, as an upgrade would.
    let mut third = BerthRun::start_command(home.path(), &["daemon", "--take-over"]);
    assert_eq!(lease_holder(home.path(), second_pid), third.pid());
    wait_gone(second_pid);
    settle();
    signal(third.pid(), "-HUP");
    lease_holder(home.path(), third.pid());
    assert!(
        third.wait(std::time::Duration::from_secs(60)).is_some(),
        "the third daemon did not stop"
    );
    settle();
    let count = load.stop();
    assert!(
        count.failed.is_empty(),
        "{} of {} requests failed across three handovers: {:?}",
        count.failed.len(),
        count.ok + count.failed.len() as u64,
        &count.failed[..count.failed.len().min(10)]
    );
    assert!(count.ok > 100, "only {} requests answered", count.ok);
    let on_host_port = published.stop();
    assert!(
        on_host_port.failed.is_empty(),
        "{} of {} requests to the host port failed: {:?}",
        on_host_port.failed.len(),
        on_host_port.ok + on_host_port.failed.len() as u64,
        &on_host_port.failed[..on_host_port.failed.len().min(10)]
    );
    assert!(
        on_host_port.ok > 100,
        "only {} answered on the host port",
        on_host_port.ok
    );
    // The same pods, not restarted; the API where it was.
    assert_eq!(pod_uids(home.path()), before);
    let table = ok(berth(home.path(), &["get", "pods"]));
    assert_eq!(
        table.stdout.matches("Running").count(),
        4,
        "{}",
        table.stdout
    );
    assert_eq!(process_running("handover-marker"), Some(boxed));
    assert_eq!(process_running("sidecar-marker"), Some(sidecar));
    assert_eq!(
        pastas(),
        pastas_before,
        "the Linux pod's pasta was not kept"
    );
    eprintln!(
        "three handovers: {} requests, none failed, slowest {:?}",
        count.ok, count.slowest
    );
}

#[test]
fn applying_the_same_deployment_again_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    build_echo(home.path());
    let _daemon = daemon(home.path());
    let files = tempfile::tempdir().unwrap();
    // Ports and Service ports leave out their protocol, as most manifests
    // do: the stored TCP is the same key, not another element.
    let manifest = write(
        files.path(),
        "web.yaml",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "echo:1", ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    ok(berth(home.path(), &["apply", "-f", &manifest]));
    wait_ready(home.path(), 1);
    for _ in 0..2 {
        ok(berth(home.path(), &["apply", "-f", &manifest]));
    }
    let deployment: serde_json::Value = serde_json::from_str(
        &ok(berth(
            home.path(),
            &["get", "deployment", "web", "-o", "json"],
        ))
        .stdout,
    )
    .unwrap();
    assert_eq!(deployment["metadata"]["generation"], 1, "{deployment:#}");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"],
        serde_json::json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    let service: serde_json::Value = serde_json::from_str(
        &ok(berth(home.path(), &["get", "service", "web", "-o", "json"])).stdout,
    )
    .unwrap();
    assert_eq!(
        service["spec"]["ports"].as_array().unwrap().len(),
        1,
        "{service:#}"
    );
    let sets = ok(berth(home.path(), &["get", "rs"])).stdout;
    assert_eq!(sets.lines().count(), 2, "one ReplicaSet: {sets}");
}

#[test]
fn concurrent_server_side_applies_are_merged_again_not_refused() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    let socket = home.path().join("berth.sock");
    // Eight managers apply a label each to one ConfigMap at once, over and
    // over: each apply reads, merges and writes, and another's write lands
    // in between. kube-apiserver merges again then; so must berth (the
    // first ones race to create it, too).
    let threads: Vec<_> = (0..8)
        .map(|manager| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut refused = Vec::new();
                for round in 0..25 {
                    use std::io::{Read as _, Write as _};
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"shared","labels":{{"m{manager}":"r{round}"}}}}}}"#
                    );
                    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
                    write!(
                        stream,
                        "PATCH /api/v1/namespaces/default/configmaps/shared?fieldManager=m{manager} HTTP/1.1\r\n\
                         Host: berth\r\nContent-Type: application/apply-patch+yaml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer).unwrap();
                    if !(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 201")) {
                        refused.push(answer);
                    }
                }
                refused
            })
        })
        .collect();
    let refused: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        refused.is_empty(),
        "{} of 200 applies refused: {:#?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    // Every manager's last label is there.
    let map: serde_json::Value = serde_json::from_str(
        &ok(berth(
            home.path(),
            &["get", "configmap", "shared", "-o", "json"],
        ))
        .stdout,
    )
    .unwrap();
    for manager in 0..8 {
        assert_eq!(
            map["metadata"]["labels"][format!("m{manager}")],
            "r24",
            "{map:#}"
        );
    }
}

#[test]
fn systemd_hears_the_daemon_ready_and_follows_it_across_a_hot_restart() {
    let home = tempfile::tempdir().unwrap();
    let _last = LastDaemon(home.path());
    // systemd's end of a Type=notify unit's NOTIFY_SOCKET.
    let path = home.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let heard = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap())];
    let mut first = BerthRun::start_command_with(home.path(), &["daemon"], &env);
    let said = heard();
    assert!(
        said.contains("READY=1\n") && said.contains(&format!("MAINPID={}\n", first.pid())),
        "{said:?}"
    );
    // A hot restart: the successor says it is the service before it asks
    // the predecessor to let go (so systemd never sees the service's main
    // process exit), then that it is ready.
    signal(first.pid(), "-HUP");
    let taking = heard();
    let second = lease_holder(home.path(), first.pid());
    assert_eq!(taking, format!("MAINPID={second}\n"));
    let said = heard();
    assert!(
        said.contains("READY=1\n") && said.contains(&format!("MAINPID={second}\n")),
        "{said:?}"
    );
    assert!(
        first.wait(std::time::Duration::from_secs(60)).is_some(),
        "the first daemon did not stop"
    );
    // The one that handed over said nothing of stopping.
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let quiet = notify.recv(&mut buf);
    assert!(
        quiet
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "{:?}",
        quiet.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    notify.set_nonblocking(false).unwrap();
    // Stopped for good, it says so.
    signal(second, "-TERM");
    assert_eq!(heard(), "STOPPING=1\n");
    wait_gone(second);
}
