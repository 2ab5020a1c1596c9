//! HorizontalPodAutoscalers against real load: a Deployment scaled out
//! on CPU and back after its window, one following a stepped request
//! rate, `kubectl autoscale` and `kubectl get hpa` as on a cluster, and
//! HPAs berth cannot act on saying why.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_tests::kube::{apply, build_image, kubectl, kubectl_as};
use berth_tests::{BerthRun, send};

/// A daemon that samples each second and syncs HPAs each two, with the
/// misbehave guest as `mb:1`; returns it and its ingress.
fn daemon(home: &Path) -> (BerthRun, String) {
    build_image(home, Path::new(berth_tests::guests::MISBEHAVE), "mb:1");
    let daemon = BerthRun::start_command(
        home,
        &[
            "daemon",
            "--metrics-resolution",
            "1s",
            "--hpa-sync-period",
            "2s",
        ],
    );
    let ingress = daemon.ingress();
    (daemon, ingress)
}

/// Deployment `web` (1 replica of misbehave, 100m of CPU requested) and
/// its Service.
const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: app, image: 'mb:1', imagePullPolicy: Never, resources: {requests: {cpu: 100m}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\n";

/// The Deployment's spec.replicas.
fn replicas(home: &Path) -> u64 {
    let out = kubectl(home, &["get", "deployment", "web", "-o", "json"]);
    assert!(out.success, "{}", out.stderr);
    let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    d["spec"]["replicas"].as_u64().unwrap()
}

fn wait_for_replicas(home: &Path, what: &str, done: impl Fn(u64) -> bool, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let n = replicas(home);
        if done(n) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {n} replicas; hpa: {}",
            kubectl(home, &["describe", "hpa", "web"]).stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// [`wait_for_replicas`] off the async workers.
async fn replicas_become(
    home: &Path,
    what: &'static str,
    done: impl Fn(u64) -> bool + Send + 'static,
    within: Duration,
) -> u64 {
    let home = home.to_owned();
    tokio::task::spawn_blocking(move || wait_for_replicas(&home, what, done, within))
        .await
        .unwrap()
}

/// Waits until the HPA `web` has been synced once (its service is routed
/// in the same pass).
async fn wait_synced(home: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubectl(home, &["get", "hpa", "web", "-o", "json"])
        .stdout
        .contains("ScalingActive")
    {
        assert!(Instant::now() < deadline, "the HPA was never synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clients sending `path` to `web` in a loop until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(ingress: &str, path: &str, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url) = (stop.clone(), format!("{ingress}{path}"));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let reply =
                            send("GET", &url, &[("host", "web.localhost")], Vec::new()).await;
                        assert_eq!(reply.status, 200, "{}", reply.text());
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load client failed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_on_cpu_scales_out_under_load_and_back_after_its_window() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = daemon(home.path());
    apply(
        home.path(),
        &(WEB.to_owned()
            + "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - {type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}}\n  behavior:\n    scaleDown: {stabilizationWindowSeconds: 5}\n"),
    );
    berth_tests::kube::wait_ready(home.path(), 1);
    // Idle: no reason to scale, and TARGETS shows a reading once there is one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hpa = kubectl(home.path(), &["get", "hpa", "web", "--no-headers"]);
        assert!(hpa.success, "{}", hpa.stderr);
        if !hpa.stdout.contains("<unknown>") {
            assert!(hpa.stdout.contains("Deployment/web"), "{}", hpa.stdout);
            assert!(hpa.stdout.contains("%/50%"), "{}", hpa.stdout);
            break;
        }
        assert!(Instant::now() < deadline, "no reading: {}", hpa.stdout);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(replicas(home.path()), 1);

    // Two clients keep a core busy in 50 ms slices: 10× the request.
    let load = Load::start(&ingress, "/burn?ms=50", 2, Duration::ZERO);
    let out = replicas_become(
        home.path(),
        "scaling out",
        |n| n >= 2,
        Duration::from_secs(60),
    )
    .await;
    assert!(out <= 4, "bounded by maxReplicas: {out}");
    let hpa = kubectl(home.path(), &["get", "hpa", "web", "--no-headers"]);
    let targets: Vec<&str> = hpa.stdout.split_whitespace().collect();
    // NAME REFERENCE TARGETS(cpu: N%/50%) MINPODS MAXPODS REPLICAS AGE
    assert_eq!(
        &targets[..3],
        ["web", "Deployment/web", "cpu:"],
        "{}",
        hpa.stdout
    );
    assert!(targets[3].ends_with("%/50%"), "{}", hpa.stdout);
    assert_eq!(&targets[4..6], ["1", "4"], "{}", hpa.stdout);
    load.stop().await;

    // Idle again: back to one once the 5 s window has passed.
    replicas_become(
        home.path(),
        "scaling in",
        |n| n == 1,
        Duration::from_secs(60),
    )
    .await;
    let described = kubectl(home.path(), &["describe", "hpa", "web"]);
    assert!(
        described
            .stdout
            .contains("reason: cpu resource utilization (percentage of request) above target"),
        "{}",
        described.stdout
    );
    assert!(
        described
            .stdout
            .contains("reason: All metrics below target"),
        "{}",
        described.stdout
    );
    let hpa = kubectl(home.path(), &["get", "hpa", "web", "-o", "json"]);
    let hpa: serde_json::Value = serde_json::from_str(&hpa.stdout).unwrap();
    let conditions = hpa["status"]["conditions"].as_array().unwrap();
    let holds = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap()["status"].clone();
    assert_eq!(holds("AbleToScale"), "True");
    assert_eq!(holds("ScalingActive"), "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_on_requests_per_second_follows_a_stepped_load() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = daemon(home.path());
    apply(
        home.path(),
        &(WEB.to_owned()
            + "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  maxReplicas: 6\n  metrics:\n  - type: Pods\n    pods:\n      metric: {name: berth_pod_requests_per_second}\n      target: {type: AverageValue, averageValue: '20'}\n  behavior:\n    scaleDown: {stabilizationWindowSeconds: 4}\n"),
    );
    berth_tests::kube::wait_ready(home.path(), 1);
    // About 60 req/s: 3 pods at 20 each. One client, a request each ~16 ms.
    let load = Load::start(&ingress, "/", 1, Duration::from_millis(16));
    let high = replicas_become(
        home.path(),
        "following 60 req/s",
        |n| n >= 3,
        Duration::from_secs(60),
    )
    .await;
    assert!(high <= 4, "60 req/s at 20 each is about 3 pods, not {high}");
    let hpa = kubectl(home.path(), &["get", "hpa", "web", "--no-headers"]);
    assert!(hpa.stdout.contains("/20 "), "{}", hpa.stdout);
    load.stop().await;
    // A step down to nothing: back to minReplicas.
    replicas_become(
        home.path(),
        "following 0 req/s",
        |n| n == 1,
        Duration::from_secs(60),
    )
    .await;
}

#[test]
fn kubectl_autoscale_makes_an_hpa_with_either_kubectl() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _) = daemon(home.path());
    apply(home.path(), WEB);
    // kubectl 1.32 creates autoscaling/v1 (in protobuf); 1.33 tries v2.
    let made = kubectl(
        home.path(),
        &[
            "autoscale",
            "deployment",
            "web",
            "--min=1",
            "--max=5",
            "--cpu-percent=60",
        ],
    );
    assert!(made.success, "{}", made.stderr);
    assert!(made.stdout.contains("autoscaled"), "{}", made.stdout);
    let v1 = kubectl(
        home.path(),
        &[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "web",
            "-o",
            "json",
        ],
    );
    let v1: serde_json::Value = serde_json::from_str(&v1.stdout).unwrap();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    let v2 = kubectl(home.path(), &["get", "hpa", "web", "-o", "json"]);
    let v2: serde_json::Value = serde_json::from_str(&v2.stdout).unwrap();
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    assert_eq!(v2["spec"]["maxReplicas"], 5);
    // The versioned kubectls live beside the real kubectl binary.
    let kubectl_133 = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("kubectl"))
                .find(|k| k.exists())
        })
        .and_then(|k| k.canonicalize().ok())
        .map(|k| k.with_file_name("kubectl.1.33"))
        .filter(|k| k.exists())
        .expect("kubectl.1.33 is needed (it comes with the Debian package kubectl)");
    let made = kubectl_as(
        kubectl_133.to_str().unwrap(),
        home.path(),
        &[
            "autoscale",
            "deployment",
            "web",
            "--name=web2",
            "--max=3",
            "--cpu-percent=40",
        ],
    );
    assert!(made.success, "{}", made.stderr);
    let v2 = kubectl(home.path(), &["get", "hpa", "web2", "-o", "json"]);
    let v2: serde_json::Value = serde_json::from_str(&v2.stdout).unwrap();
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        40
    );
    let listed = kubectl(home.path(), &["get", "hpa"]);
    assert!(listed.stdout.contains("TARGETS"), "{}", listed.stdout);
}

#[test]
fn hpas_berth_cannot_act_on_say_why_and_bad_ones_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let (daemon, _) = daemon(home.path());
    // A target that does not exist: a condition, not a crash.
    apply(
        home.path(),
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: lost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: nowhere}\n  maxReplicas: 3\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl(home.path(), &["get", "hpa", "lost", "-o", "json"]);
        let hpa: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let able = hpa["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "AbleToScale")
            .cloned();
        if let Some(able) = able {
            assert_eq!(able["status"], "False");
            assert_eq!(able["reason"], "FailedGetScale");
            assert!(
                able["message"].as_str().unwrap().contains("nowhere"),
                "{able}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no condition: {hpa}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // A metric berth does not have, and External ones: refused at apply,
    // naming the field, and nothing is stored.
    let dir = tempfile::tempdir().unwrap();
    for (yaml, field) in [
        (
            "  - type: Pods\n    pods: {metric: {name: queue_length}, target: {type: AverageValue, averageValue: '5'}}\n",
            "spec.metrics[0].pods.metric.name",
        ),
        (
            "  - type: External\n    external: {metric: {name: sqs}, target: {type: Value, value: '5'}}\n",
            "spec.metrics[0].type",
        ),
        (
            "  - {type: Resource, resource: {name: gpu, target: {type: Utilization, averageUtilization: 50}}}\n",
            "spec.metrics[0].resource.name",
        ),
    ] {
        let file = berth_tests::kube::write(
            dir.path(),
            "bad.yaml",
            &format!(
                "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: bad}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: web}}\n  maxReplicas: 3\n  metrics:\n{yaml}"
            ),
        );
        let out = kubectl(home.path(), &["apply", "-f", &file]);
        assert!(!out.success, "{yaml}: {}", out.stdout);
        assert!(out.stderr.contains(field), "{field}: {}", out.stderr);
    }
    assert!(!kubectl(home.path(), &["get", "hpa", "bad"]).success);
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_service_scales_to_zero_and_a_burst_at_zero_is_all_served() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = daemon(home.path());
    apply(
        home.path(),
        &(WEB.to_owned()
            + "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 0\n  maxReplicas: 3\n  metrics:\n  - type: Object\n    object:\n      describedObject: {apiVersion: v1, kind: Service, name: web}\n      metric: {name: berth_service_requests_per_second}\n      target: {type: AverageValue, averageValue: '100'}\n  behavior:\n    scaleDown: {stabilizationWindowSeconds: 3}\n"),
    );
    // Idle: down to zero once the window has passed, its pod gone.
    replicas_become(
        home.path(),
        "scaling to zero",
        |n| n == 0,
        Duration::from_secs(60),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !berth_tests::kube::pods(home.path()).is_empty() {
        assert!(Instant::now() < deadline, "the pod never went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 50 requests at once, at zero: the router holds them while one
    // replica starts, and every one is answered.
    let started = Instant::now();
    let replies = futures_join_all((0..50).map(|_| {
        let url = format!("{ingress}/whoami");
        async move { send("GET", &url, &[("host", "web.localhost")], Vec::new()).await }
    }))
    .await;
    let took = started.elapsed();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let n = replicas(home.path());
    assert!((1..=3).contains(&n), "{n} replicas after the burst");
    let described = kubectl(home.path(), &["describe", "hpa", "web"]);
    assert!(
        described.stdout.contains("arrived at zero replicas"),
        "{}",
        described.stdout
    );
    eprintln!("50 requests from zero answered in {took:?}");
}

/// Awaits every future, concurrently.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_at_zero_gets_503_with_the_reason_when_no_replica_comes() {
    let home = tempfile::tempdir().unwrap();
    let daemon =
        BerthRun::start_command(home.path(), &["daemon", "--scale-from-zero-timeout", "2s"]);
    let ingress = daemon.ingress();
    // Its image is nowhere: the replica woken for the request never starts.
    apply(
        home.path(),
        &(WEB
            .replace("replicas: 1", "replicas: 0")
            .replace("'mb:1'", "'missing:1'")
            + "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 0\n  maxReplicas: 2\n  metrics:\n  - type: Object\n    object:\n      describedObject: {apiVersion: v1, kind: Service, name: web}\n      metric: {name: berth_service_requests_per_second}\n      target: {type: Value, value: '10'}\n"),
    );
    // The service is routed in the pass that first syncs the HPA.
    wait_synced(home.path()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let reply = send(
        "GET",
        &format!("{ingress}/"),
        &[("host", "web.localhost")],
        Vec::new(),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains("scaled to zero") && reply.text().contains("2s"),
        "{}",
        reply.text()
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // It was woken all the same.
    assert_eq!(replicas(home.path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_service_at_zero_is_woken_by_a_request_and_answers_it() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    let daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let ingress = daemon.ingress();
    // No readiness probe: the pod is ready when httpd starts, perhaps
    // before it listens, and the held request must still be answered.
    apply(
        home.path(),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: httpd, image: 'busybox:1', command: [httpd, -f, -p, '8000', -h, /www]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8000}]\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 0\n  maxReplicas: 1\n  metrics:\n  - type: Object\n    object:\n      describedObject: {apiVersion: v1, kind: Service, name: web}\n      metric: {name: berth_service_requests_per_second}\n      target: {type: AverageValue, averageValue: '100'}\n",
    );
    wait_synced(home.path()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = send(
        "GET",
        &format!("{ingress}/index.html"),
        &[("host", "web.localhost")],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from busybox\n");
    assert_eq!(replicas(home.path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_calling_a_service_at_zero_in_process_is_held_and_answered() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = daemon(home.path());
    apply(
        home.path(),
        &(WEB.replace("replicas: 1", "replicas: 0")
            + "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 0\n  maxReplicas: 2\n  metrics:\n  - type: Object\n    object:\n      describedObject: {apiVersion: v1, kind: Service, name: web}\n      metric: {name: berth_service_requests_per_second}\n      target: {type: AverageValue, averageValue: '100'}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: caller, labels: {app: caller}}\nspec:\n  containers: [{name: app, image: 'mb:1', imagePullPolicy: Never}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: caller}\nspec:\n  selector: {app: caller}\n  ports: [{port: 80}]\n"),
    );
    berth_tests::kube::wait_ready(home.path(), 1);
    wait_synced(home.path()).await;
    assert_eq!(replicas(home.path()), 0);
    // The caller's guest calls http://web/ by name, in-process: the call
    // wakes web, waits for its replica, and gets its answer.
    let reply = send(
        "GET",
        &format!("{ingress}/fetch?url=http://web/whoami"),
        &[("host", "caller.localhost")],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("fetched http://web/whoami: 200 OK: web-"),
        "{}",
        reply.text()
    );
    assert_eq!(replicas(home.path()), 1);
}

#[test]
fn an_hpa_scales_a_stateful_set_through_its_scale() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _) = daemon(home.path());
    apply(
        home.path(),
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  \
         replicas: 1\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    \
         spec:\n      containers:\n      - {name: app, image: 'mb:1', imagePullPolicy: Never, resources: {requests: {cpu: 100m}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{port: 80}]\n---\n\
         apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: db}\nspec:\n  \
         scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}\n  minReplicas: 2\n  maxReplicas: 4\n  \
         metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}\n",
    );
    // Below its minimum: raised to it, each replica with its ordinal name.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = kubectl(home.path(), &["get", "pods", "-o", "name"]).stdout;
        let sts = kubectl(home.path(), &["get", "sts", "db", "-o", "json"]).stdout;
        let sts: serde_json::Value = serde_json::from_str(&sts).unwrap();
        if sts["spec"]["replicas"] == 2 && pods.contains("pod/db-0") && pods.contains("pod/db-1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stateful set was not scaled: {sts}; pods: {pods}; hpa: {}",
            kubectl(home.path(), &["describe", "hpa", "db"]).stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let hpa = kubectl(home.path(), &["get", "hpa", "db", "-o", "json"]).stdout;
    let hpa: serde_json::Value = serde_json::from_str(&hpa).unwrap();
    assert_eq!(hpa["status"]["desiredReplicas"], 2, "{hpa}");
    let rescaled = kubectl(
        home.path(),
        &[
            "get",
            "events",
            "--field-selector",
            "reason=SuccessfulRescale",
        ],
    );
    assert!(
        rescaled.stdout.contains("New size: 2"),
        "{}",
        rescaled.stdout
    );
}
