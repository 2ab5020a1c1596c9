//! Pods as Kubernetes means them: containers that share the pod's network,
//! init containers that run first, sidecars that run beside.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::kube::{apply, build_image, wait_for_named, wait_ready};
use berth_tests::{BerthRun, busybox, get};

#[tokio::test]
async fn a_wasm_container_reaches_another_container_of_its_pod_on_localhost() {
    let home = tempfile::tempdir().unwrap();
    build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "front:1",
    );
    build_image(home.path(), Path::new(berth_tests::guests::HELLO), "back:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    apply(
        home.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: duo}\nspec:\n  containers:\n  \
         - {name: front, image: 'front:1', imagePullPolicy: Never, ports: [{containerPort: 8080}]}\n  \
         - {name: back, image: 'back:1', imagePullPolicy: Never, ports: [{containerPort: 9000}]}\n",
    );
    let ready = wait_ready(home.path(), 1);
    let front = format!("http://{}", ready[0].1.trim_start_matches("http://"));

    // No outbound grant: the pod's own port is the pod's.
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let reply = get(&format!("{front}/fetch?url=http://{host}:9000/x")).await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
        assert_eq!(
            reply.body,
            format!("fetched http://{host}:9000/x: 200 OK: hello from /x\n")
        );
    }
    // A loopback port no container of the pod declares stays denied.
    let reply = get(&format!("{front}/fetch?url=http://localhost:9001/")).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.body.contains("HttpRequestDenied"), "{}", reply.body);
}

/// The pod's row as `kubectl get pod` prints it: READY, STATUS, RESTARTS.
fn row(home: &Path, pod: &str) -> (String, String, u32) {
    let out = berth_tests::kube::kubectl(home, &["get", "pod", pod, "--no-headers"]);
    let cells: Vec<&str> = out.stdout.split_whitespace().collect();
    match cells.as_slice() {
        [_, ready, status, restarts, ..] => (
            (*ready).to_owned(),
            (*status).to_owned(),
            restarts.parse().unwrap_or(0),
        ),
        _ => (String::new(), format!("{}{}", out.stdout, out.stderr), 0),
    }
}

/// Waits until `kubectl get pod` shows what `done` wants; returns it.
fn wait_for_row(
    home: &Path,
    pod: &str,
    done: impl Fn(&(String, String, u32)) -> bool,
) -> (String, String, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = row(home, pod);
        if done(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "{pod}: {shown:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_app_linux_and_wasm_alike() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    build_image(home.path(), Path::new(berth_tests::guests::TOOL), "tool:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    // Each init container finds what the one before it left, in one
    // emptyDir; the second joins the network the first (gone) made.
    apply(
        home.path(),
        r#"apiVersion: v1
kind: Pod
metadata: {name: staged}
spec:
  initContainers:
  - name: first
    image: busybox:1
    command: [sh, -c, 'echo first > /work/order; echo first ran']
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: busybox:1
    command: [sh, -c, 'grep -q first /work/order && echo second >> /work/order']
    volumeMounts: [{name: work, mountPath: /work}]
  - name: check
    image: tool:1
    imagePullPolicy: Never
    args: [read, /work/order]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'cat /work/order; echo done; sleep 3600']
    volumeMounts: [{name: work, mountPath: /work}]
  volumes: [{name: work, emptyDir: {}}]
"#,
    );
    let pod = wait_for_named(home.path(), "staged", berth_tests::kube::is_ready);
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    let names: Vec<&str> = inits.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "second", "check"]);
    for init in inits {
        assert_eq!(
            init["state"]["terminated"]["reason"], "Completed",
            "{init:#}"
        );
        assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init:#}");
    }
    let conditions = &pod["status"]["conditions"];
    assert!(
        conditions
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Initialized" && c["status"] == "True"),
        "{conditions:#}"
    );
    // Each init container's log is its own; the app saw all they did.
    let logs = |container: &str| {
        berth_tests::ok(berth_tests::kube::kubectl(
            home.path(),
            &["logs", "staged", "-c", container],
        ))
        .stdout
    };
    assert_eq!(logs("first"), "first ran\n");
    assert_eq!(logs("check"), "first\nsecond\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs("app").contains("done") {
        assert!(Instant::now() < deadline, "{}", logs("app"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(logs("app"), "first\nsecond\ndone\n");
    let described = berth_tests::ok(berth_tests::berth(
        home.path(),
        &["describe", "pod", "staged"],
    ))
    .stdout;
    let init = described
        .find("Init Containers:\n  first:")
        .expect(&described);
    let apps = described.find("Containers:\n  app:").expect(&described);
    assert!(init < apps, "{described}");
    assert!(
        described.contains("Terminated (Completed, exit code 0)"),
        "{described}"
    );
    assert_eq!(
        row(home.path(), "staged"),
        ("1/1".to_owned(), "Running".to_owned(), 0)
    );
}

#[test]
fn a_failing_init_container_holds_the_app_back_as_kubernetes_shows_it() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    apply(
        home.path(),
        r#"apiVersion: v1
kind: Pod
metadata: {name: retried}
spec:
  initContainers:
  - {name: ok, image: busybox:1, command: [sh, -c, 'echo fine']}
  - {name: broken, image: busybox:1, command: [sh, -c, 'echo cannot migrate; exit 3']}
  containers:
  - {name: app, image: busybox:1, command: [sh, -c, 'echo app ran; sleep 3600']}
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  initContainers:
  - {name: broken, image: busybox:1, command: [sh, -c, 'exit 4']}
  containers:
  - {name: app, image: busybox:1, command: [sh, -c, 'echo app ran']}
"#,
    );
    // Run again and again, backing off, the app never started.
    let (ready, _, restarts) = wait_for_row(home.path(), "retried", |(_, status, restarts)| {
        status == "Init:CrashLoopBackOff" && *restarts >= 2
    });
    assert_eq!(ready, "0/1");
    // Its log, and the run's before (the current run may have just begun
    // and said nothing yet: asked again until it has).
    for args in [&["-c", "broken"][..], &["-c", "broken", "--previous"]] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = vec!["logs", "retried"];
            all.extend_from_slice(args);
            let logs = berth_tests::kube::kubectl(home.path(), &all);
            if logs.success && logs.stdout == "cannot migrate\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{args:?}: {}{}",
                logs.stdout,
                logs.stderr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let pod = wait_for_named(home.path(), "retried", |_| true);
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    let broken = &pod["status"]["initContainerStatuses"][1];
    assert!(
        broken["restartCount"].as_u64().unwrap() >= restarts.min(2) as u64,
        "{broken:#}"
    );
    assert_eq!(
        broken["lastState"]["terminated"]["exitCode"], 3,
        "{broken:#}"
    );
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    let app = berth_tests::kube::kubectl(home.path(), &["logs", "retried", "-c", "app"]);
    assert!(!app.stdout.contains("app ran"), "{}", app.stdout);

    // Never restarted: the pod fails, its app never run.
    let (_, status, _) = wait_for_row(home.path(), "once", |(_, status, _)| status == "Init:Error");
    assert_eq!(status, "Init:Error");
    let pod = wait_for_named(home.path(), "once", |p| p["status"]["phase"] == "Failed");
    assert_eq!(
        pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        4
    );
}

#[test]
fn a_sidecar_starts_first_outlives_the_app_s_restarts_and_stops_last() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    // What each container did, in order, kept past the pod's deletion.
    let record = tempfile::tempdir().unwrap();
    apply(
        home.path(),
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: sided}}
spec:
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: proxy
    image: busybox:1
    restartPolicy: Always
    command: [sh, -c, 'trap "echo proxy-stopped >> /record/events; exit 0" TERM; echo proxy-up >> /record/events; httpd -p 9000 -h /record; while true; do sleep 0.1; done']
    ports: [{{containerPort: 9000}}]
    readinessProbe: {{tcpSocket: {{port: 9000}}, periodSeconds: 1}}
    volumeMounts: [{{name: record, mountPath: /record}}]
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'until wget -qO- http://127.0.0.1:9000/events > /dev/null; do sleep 0.1; done; echo app-up >> /record/events; [ $(grep -c app-up /record/events) -ge 2 ] || exit 1; trap "echo app-stopped >> /record/events; exit 0" TERM; while true; do sleep 0.1; done']
    volumeMounts: [{{name: record, mountPath: /record}}]
  volumes: [{{name: record, hostPath: {{path: {}}}}}]
"#,
            record.path().display()
        ),
    );
    // The app ended once and was started again; the sidecar ran on.
    let pod = wait_for_named(home.path(), "sided", |p| {
        berth_tests::kube::is_ready(p) && p["status"]["containerStatuses"][0]["restartCount"] == 1
    });
    let proxy = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(proxy["restartCount"], 0, "{proxy:#}");
    assert_eq!(proxy["ready"], true, "{proxy:#}");
    assert!(proxy["state"]["running"].is_object(), "{proxy:#}");
    let events = || std::fs::read_to_string(record.path().join("events")).unwrap();
    // Running (so ready: it has no probe) before it has reached the
    // sidecar again and said so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while events() != "proxy-up\napp-up\napp-up\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(events(), "proxy-up\napp-up\napp-up\n");
    // Both count among the pod's containers.
    assert_eq!(
        row(home.path(), "sided"),
        ("2/2".to_owned(), "Running".to_owned(), 1)
    );
    // Deleted: the app stops first, then its sidecar.
    berth_tests::ok(berth_tests::kube::kubectl(
        home.path(),
        &["delete", "pod", "sided", "--wait=true", "--timeout=60s"],
    ));
    assert_eq!(
        events(),
        "proxy-up\napp-up\napp-up\napp-stopped\nproxy-stopped\n"
    );
}

#[test]
fn a_sidecar_that_ends_is_started_again_while_the_app_runs_on() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    apply(
        home.path(),
        r#"apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  restartPolicy: Never
  initContainers:
  - {name: shipper, image: busybox:1, restartPolicy: Always, command: [sh, -c, 'echo shipping; sleep 0.5; exit 2']}
  containers:
  - {name: app, image: busybox:1, command: [sh, -c, 'sleep 3600']}
"#,
    );
    let pod = wait_for_named(home.path(), "flaky", |p| {
        p["status"]["initContainerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    });
    let shipper = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(
        shipper["lastState"]["terminated"]["exitCode"], 2,
        "{shipper:#}"
    );
    let app = &pod["status"]["containerStatuses"][0];
    assert_eq!(app["restartCount"], 0, "{app:#}");
    assert!(app["state"]["running"].is_object(), "{app:#}");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
}

#[test]
fn a_bad_init_container_is_refused_whole_naming_the_field() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let dir = tempfile::tempdir().unwrap();
    let file = berth_tests::kube::write(
        dir.path(),
        "bad.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  initContainers:
  - {name: setup, image: busybox:1, livenessProbe: {exec: {command: ["true"]}}}
  containers:
  - {name: app, image: busybox:1}
"#,
    );
    let out = berth_tests::kube::kubectl(home.path(), &["apply", "-f", &file]);
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("spec.initContainers[0].livenessProbe: may not be set for init containers"),
        "{}",
        out.stderr
    );
    let pods = berth_tests::kube::kubectl(home.path(), &["get", "pods", "-o", "name"]);
    assert_eq!(pods.stdout, "");
}

#[test]
fn a_memory_backed_empty_dir_is_a_tmpfs_of_its_size_limit_gone_with_the_pod() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    build_image(home.path(), Path::new(berth_tests::guests::TOOL), "tool:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    apply(
        home.path(),
        r#"apiVersion: v1
kind: Pod
metadata: {name: cached}
spec:
  initContainers:
  - name: fill
    image: busybox:1
    command: [sh, -c, 'grep " /cache " /proc/mounts | cut -d" " -f3; echo kept > /cache/note; dd if=/dev/zero of=/cache/big bs=1k count=2048 2>&1; rm -f /cache/big']
    volumeMounts: [{name: cache, mountPath: /cache}]
  containers:
  - name: reader
    image: tool:1
    imagePullPolicy: Never
    args: [read, /cache/note]
    volumeMounts: [{name: cache, mountPath: /cache}]
  restartPolicy: Never
  volumes: [{name: cache, emptyDir: {medium: Memory, sizeLimit: 1Mi}}]
"#,
    );
    wait_for_named(home.path(), "cached", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let logs = |container: &str| {
        berth_tests::ok(berth_tests::kube::kubectl(
            home.path(),
            &["logs", "cached", "-c", container],
        ))
        .stdout
    };
    // A tmpfs, full at its sizeLimit; what one container wrote the other read.
    let fill = logs("fill");
    assert!(fill.starts_with("tmpfs\n"), "{fill}");
    assert!(fill.contains("No space left on device"), "{fill}");
    assert_eq!(logs("reader"), "kept\n");
    let pod = wait_for_named(home.path(), "cached", |_| true);
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    berth_tests::ok(berth_tests::kube::kubectl(
        home.path(),
        &["delete", "pod", "cached", "--wait=true", "--timeout=60s"],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = home.path().join("pods").join(&uid);
        if !mounts.contains(&uid) && !dir.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} still mounted or there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_service_reaches_a_sidecar_on_its_port_and_the_app_on_its_own() {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    build_image(
        home.path(),
        Path::new(berth_tests::guests::HELLO),
        "hello:1",
    );
    let daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let ingress = daemon.ingress();
    apply(
        home.path(),
        r#"apiVersion: v1
kind: Pod
metadata: {name: fronted, labels: {app: fronted}}
spec:
  initContainers:
  - name: status
    image: busybox:1
    restartPolicy: Always
    command: [sh, -c, 'mkdir /www; echo from the sidecar > /www/index.html; exec httpd -f -p 9000 -h /www']
    ports: [{containerPort: 9000, name: status}]
  containers:
  - {name: app, image: 'hello:1', imagePullPolicy: Never, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: fronted}
spec:
  selector: {app: fronted}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: http-status, port: 9000, targetPort: status}]
"#,
    );
    wait_for_named(home.path(), "fronted", berth_tests::kube::is_ready);
    let via = |path: &'static str| {
        let ingress = ingress.clone();
        async move {
            berth_tests::send(
                "GET",
                &format!("{ingress}{path}"),
                &[("host", "fronted.localhost")],
                Vec::new(),
            )
            .await
        }
    };
    let app = via("/hi").await;
    assert_eq!(
        (app.status, app.text()),
        (200, "hello from /hi\n".to_owned())
    );
    // The Service's second port is the sidecar's, over the Service's
    // virtual address as a pod reaches it.
    let service = berth_tests::kube::kubectl(
        home.path(),
        &["get", "svc", "fronted", "-o", "jsonpath={.spec.clusterIP}"],
    );
    let ip = berth_tests::ok(service).stdout;
    let reply = get(&format!("http://{ip}:9000/")).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "from the sidecar\n")
    );
}

#[tokio::test]
async fn a_component_of_both_worlds_given_args_serves_and_runs_beside_until_its_run_ends() {
    let home = tempfile::tempdir().unwrap();
    build_image(
        home.path(),
        Path::new(berth_tests::guests::WORKER),
        "worker:1",
    );
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let pod = |name: &str, args: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  \
             volumes: [{{name: data, emptyDir: {{}}}}]\n  containers:\n  \
             - {{name: w, image: 'worker:1', imagePullPolicy: Never{args}, ports: [{{containerPort: 8080}}], \
             volumeMounts: [{{name: data, mountPath: /data}}]}}\n"
        )
    };
    apply(
        home.path(),
        // A `command` of only the program's name is no command line.
        &(pod("both", ", args: ['60', '50', '3']")
            + "---\n"
            + &pod("served", ", command: [worker]")),
    );
    let ready = wait_ready(home.path(), 2);
    let url = |name: &str| {
        let (_, url) = ready.iter().find(|(pod, _)| pod == name).unwrap();
        format!("http://{}/", url.trim_start_matches("http://"))
    };

    // Served while its `run` ticks into the pod's volume.
    let tick = |body: &str| -> Option<u32> { body.trim().strip_prefix("ticks: ")?.parse().ok() };
    let first = berth_tests::get_until(&url("both"), |b| tick(b).is_some()).await;
    let later = berth_tests::get_until(&url("both"), |b| tick(b) > tick(&first)).await;
    assert!(tick(&later) > tick(&first), "{first:?} then {later:?}");
    // Given no command line it is only served: `run` never runs.
    assert_eq!(get(&url("served")).await.body, "ticks: none\n");

    // The container is its `run`: it ends with it, in error here.
    let ended = wait_for_named(home.path(), "both", |p| p["status"]["phase"] == "Failed");
    let state = &ended["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["reason"], "Error", "{ended:#}");
    let logs = berth_tests::ok(berth_tests::berth(home.path(), &["logs", "both"]));
    assert!(
        logs.stdout.starts_with("worker started\ntick 1\n"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("tick 60\n"), "{}", logs.stdout);
    assert!(
        logs.stdout.contains("worker leaving with 3"),
        "{}",
        logs.stdout
    );
    // The one without arguments serves on, untouched.
    assert_eq!(row(home.path(), "served").1, "Running");
    assert_eq!(get(&url("served")).await.body, "ticks: none\n");
}
