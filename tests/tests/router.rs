//! The service router: requests by Host through the ingress, spread over a
//! service's ready pods, kept whole through rollouts and pod deaths, and
//! guests calling services by name in-process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_tests::kube::{build_image, pods, wait_ready, write};
use berth_tests::{BerthRun, RawReply, berth, ok, send};

/// A daemon with the misbehave guest built as `mb:1`; returns it and its
/// ingress URL.
fn cluster(home: &Path, args: &[&str]) -> (BerthRun, String) {
    build_image(home, Path::new(berth_tests::guests::MISBEHAVE), "mb:1");
    let mut all = vec!["daemon"];
    all.extend_from_slice(args);
    let daemon = BerthRun::start_command(home, &all);
    let ingress = daemon.ingress();
    (daemon, ingress)
}

/// `GET path` through the ingress with `Host: host`.
async fn via(ingress: &str, host: &str, path: &str) -> RawReply {
    send(
        "GET",
        &format!("{ingress}{path}"),
        &[("host", host)],
        Vec::new(),
    )
    .await
}

/// The pod name a `/whoami` reply names.
fn who(reply: &RawReply) -> String {
    reply
        .text()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn deployment(name: &str, replicas: u32, env: &str, probe: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: app\n        image: mb:1\n        imagePullPolicy: Never\n        env: [{env}]\n{probe}---\n"
    )
}

fn service(name: &str, selector: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {selector}}}\n  ports: [{{port: 80}}]\n{extra}---\n"
    )
}

fn pod(name: &str, app: &str, env: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec:\n  containers:\n  - name: app\n    image: mb:1\n    imagePullPolicy: Never\n    env: [{env}]\n---\n"
    )
}

fn apply(home: &Path, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.yaml", text);
    ok(berth(home, &["apply", "-f", &file]));
}

/// Names of the Ready pods once `done` holds for them.
fn wait_ready_with(home: &Path, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names: Vec<String> = pods(home)
            .iter()
            .filter(|p| berth_tests::kube::is_ready(p))
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        if done(&names) {
            return names;
        }
        assert!(Instant::now() < deadline, "ready: {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn round_robin_splits_evenly_over_the_ready_replicas() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &[]);
    apply(
        home.path(),
        &(deployment("web", 3, "", "") + &service("web", "web", "")),
    );
    let ready: Vec<String> = wait_ready(home.path(), 3)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let reply = via(&ingress, "web.localhost", "/whoami").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *counts.entry(who(&reply)).or_default() += 1;
    }
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), {
        let mut r = ready.clone();
        r.sort();
        r
    });
    for (pod, n) in &counts {
        assert!((90..=110).contains(n), "{pod} got {n}: {counts:?}");
    }
}

#[tokio::test]
async fn least_request_sends_less_to_a_slow_replica() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &[]);
    apply(
        home.path(),
        &(pod("slow", "lr", "{name: DELAY_MS, value: '300'}")
            + &pod("fast-1", "lr", "")
            + &pod("fast-2", "lr", "")
            + &service("lr", "lr", "").replace(
                "metadata: {name: lr}",
                "metadata: {name: lr, annotations: {berth.dev/load-balancer: least-request}}",
            )),
    );
    wait_ready(home.path(), 3);
    let mut clients = Vec::new();
    for _ in 0..16 {
        let ingress = ingress.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..12 {
                let reply = via(&ingress, "lr.localhost", "/whoami").await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                seen.push(who(&reply));
            }
            seen
        }));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in clients {
        for name in c.await.unwrap() {
            *counts.entry(name).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    let slow = counts.get("slow").copied().unwrap_or(0);
    // Round-robin would give it a third.
    assert!(slow * 6 < total, "slow got {slow} of {total}: {counts:?}");
    assert!(counts.get("fast-1").is_some_and(|n| *n > 0), "{counts:?}");
    assert!(counts.get("fast-2").is_some_and(|n| *n > 0), "{counts:?}");
}

#[tokio::test]
async fn an_unready_replica_gets_no_traffic_until_it_turns_ready() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &[]);
    let (gate_a, gate_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(gate_a.path().join("ready"), "").unwrap();
    let gated = |name: &str, dir: &Path| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: gate}}}}\nspec:\n  volumes: [{{name: state, hostPath: {{path: {}}}}}]\n  containers:\n  - name: app\n    image: mb:1\n    imagePullPolicy: Never\n    volumeMounts: [{{name: state, mountPath: /state}}]\n    readinessProbe:\n      httpGet: {{path: '/exists?path=/state/ready', port: 80}}\n      periodSeconds: 1\n      failureThreshold: 1\n---\n",
            dir.display()
        )
    };
    apply(
        home.path(),
        &(gated("a", gate_a.path()) + &gated("b", gate_b.path()) + &service("gate", "gate", "")),
    );
    wait_ready_with(home.path(), |names| names == ["a"]);
    // b runs but is not ready: a gets everything.
    for _ in 0..20 {
        let reply = via(&ingress, "gate.localhost", "/whoami").await;
        assert_eq!((reply.status, who(&reply)), (200, "a".to_owned()));
    }
    std::fs::write(gate_b.path().join("ready"), "").unwrap();
    wait_ready_with(home.path(), |names| names.len() == 2);
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let reply = via(&ingress, "gate.localhost", "/whoami").await;
        assert_eq!(reply.status, 200);
        *seen.entry(who(&reply)).or_default() += 1;
    }
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
    // And when a turns unready, it leaves the rotation.
    std::fs::remove_file(gate_a.path().join("ready")).unwrap();
    wait_ready_with(home.path(), |names| names == ["b"]);
    for _ in 0..10 {
        let reply = via(&ingress, "gate.localhost", "/whoami").await;
        assert_eq!((reply.status, who(&reply)), (200, "b".to_owned()));
    }
}

/// Sends GETs from a few clients until stopped; returns every reply's
/// status and body.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    fn start(ingress: &str, host: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (ingress, stop) = (ingress.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let reply = via(&ingress, host, "/whoami").await;
                        replies.push((reply.status, reply.text()));
                    }
                    replies
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

fn failures(replies: &[(u16, String)]) -> Vec<&(u16, String)> {
    replies.iter().filter(|(s, _)| *s != 200).collect()
}

const WHOAMI_READY: &str =
    "        readinessProbe: {httpGet: {path: /whoami, port: 80}, periodSeconds: 1}\n";

#[tokio::test]
async fn a_rolling_update_under_load_answers_every_request() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &[]);
    let v = |version: &str| {
        deployment(
            "web",
            3,
            &format!("{{name: VERSION, value: {version}}}"),
            WHOAMI_READY,
        ) + &service("web", "web", "")
    };
    apply(home.path(), &v("v1"));
    wait_ready(home.path(), 3);
    let load = Load::start(&ingress, "web.localhost", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    apply(home.path(), &v("v2"));
    // Done: three ready pods, all of the new template.
    let home_path = home.path().to_owned();
    tokio::task::spawn_blocking(move || {
        wait_ready_with(&home_path, |names| {
            let all = pods(&home_path);
            names.len() == 3
                && all.len() == 3
                && !serde_json::to_string(&all)
                    .unwrap()
                    .contains(r#""value":"v1""#)
        })
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies = load.finish().await;
    assert!(failures(&replies).is_empty(), "{:?}", failures(&replies));
    assert!(replies.iter().any(|(_, b)| b.contains("v1")));
    assert!(replies.iter().any(|(_, b)| b.contains("v2")));
    assert!(replies.len() > 50, "{} requests", replies.len());
}

#[tokio::test]
async fn a_replica_killed_or_failing_under_load_fails_no_get() {
    let home = tempfile::tempdir().unwrap();
    let (daemon, ingress) = cluster(home.path(), &[]);
    apply(
        home.path(),
        &(deployment("web", 3, "", WHOAMI_READY) + &service("web", "web", "")),
    );
    let before: Vec<String> = wait_ready(home.path(), 3)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let load = Load::start(&ingress, "web.localhost", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(berth(home.path(), &["delete", "pod", &before[0]]));
    // Replaced: three ready again, the deleted one not among them.
    let after = wait_ready_with(home.path(), |n| n.len() == 3 && !n.contains(&before[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies = load.finish().await;
    assert!(failures(&replies).is_empty(), "{:?}", failures(&replies));
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(
        replies
            .iter()
            .any(|(_, b)| new.iter().any(|n| b.contains(n.as_str()))),
        "the new pod {new:?} serves"
    );

    // A replica whose every request dies: each GET is answered by another.
    apply(
        home.path(),
        &(pod("broken", "mixed", "{name: FAIL, value: '1'}")
            + &pod("sound", "mixed", "")
            + &service("mixed", "mixed", "")),
    );
    wait_ready_with(home.path(), |n| {
        n.contains(&"broken".into()) && n.contains(&"sound".into())
    });
    for _ in 0..20 {
        let reply = via(&ingress, "mixed.localhost", "/whoami").await;
        assert_eq!((reply.status, who(&reply)), (200, "sound".to_owned()));
    }
    assert!(daemon.wait_for_log("retrying a request", Duration::from_secs(5)));
    // A POST is not sent twice: it gets the failure when it hits the broken one.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = send(
            "POST",
            &format!("{ingress}/whoami"),
            &[("host", "mixed.localhost")],
            b"x".to_vec(),
        )
        .await;
        statuses.push(reply.status);
    }
    assert!(
        statuses.contains(&500) && statuses.contains(&200),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn guests_call_services_by_name_and_not_across_namespaces_unless_allowed() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &[]);
    let other = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n---\n{}{}",
        pod("far", "far", "").replace(
            "metadata: {name: far,",
            "metadata: {name: far, namespace: other,"
        ),
        service("far", "far", "").replace(
            "metadata: {name: far}",
            "metadata: {name: far, namespace: other}"
        ),
    );
    let allowed = pod("allowed", "allowed", "").replace(
        "labels: {app: allowed}}",
        "labels: {app: allowed}, annotations: {berth.dev/allow-services: other/far}}",
    );
    apply(
        home.path(),
        &(other
            + &pod("near", "near", "")
            + &service("near", "near", "")
            + &pod("caller", "caller", "")
            + &service("caller", "caller", "")
            + &allowed
            + &service("allowed", "allowed", "")),
    );
    wait_ready(home.path(), 4);
    for url in [
        "http://near/whoami",
        "http://near.default/whoami",
        "http://near.default.svc/whoami",
        "http://near.default.svc.cluster.local/whoami",
    ] {
        let reply = via(&ingress, "caller.localhost", &format!("/fetch?url={url}")).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text());
        assert!(
            reply.text().contains(": 200 OK: near"),
            "{url}: {}",
            reply.text()
        );
    }
    // Another namespace: refused without the annotation, served with it.
    let denied = via(
        &ingress,
        "caller.localhost",
        "/fetch?url=http://far.other/whoami",
    )
    .await;
    assert_eq!(denied.status, 502, "{}", denied.text());
    assert!(
        denied.text().contains("HttpRequestDenied"),
        "{}",
        denied.text()
    );
    let allowed = via(
        &ingress,
        "allowed.localhost",
        "/fetch?url=http://far.other.svc/whoami",
    )
    .await;
    assert!(
        allowed.text().contains(": 200 OK: far"),
        "{}",
        allowed.text()
    );
    // A name that is no service is ordinary outbound HTTP: denied by default.
    let outside = via(&ingress, "caller.localhost", "/fetch?url=http://nothere/").await;
    assert_eq!(outside.status, 502, "{}", outside.text());
}

#[tokio::test]
async fn unknown_hosts_404_services_without_endpoints_503_and_node_ports_answer() {
    let home = tempfile::tempdir().unwrap();
    let node_port = berth_tests::free_port();
    let range = format!("{node_port}-{node_port}");
    let (_daemon, ingress) = cluster(
        home.path(),
        &["--endpoint-wait", "200ms", "--node-port-range", &range],
    );
    apply(
        home.path(),
        &(pod("web", "web", "")
            + &service("empty", "nothing", "")
            + &service("np", "web", "  type: NodePort\n")),
    );
    wait_ready(home.path(), 1);

    let reply = via(&ingress, "nope.localhost", "/").await;
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("nope"), "{}", reply.text());
    let reply = via(&ingress, "127.0.0.1", "/").await;
    assert_eq!(reply.status, 404);

    let started = Instant::now();
    let reply = via(&ingress, "empty.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.text().contains("no ready endpoints"),
        "{}",
        reply.text()
    );
    assert!(started.elapsed() >= Duration::from_millis(200));

    // The node port came from the range, and answers.
    let out = ok(berth(home.path(), &["get", "svc", "np", "-o", "json"]));
    assert!(
        out.stdout.contains(&format!("\"nodePort\": {node_port}")),
        "{}",
        out.stdout
    );
    let reply = send(
        "GET",
        &format!("http://127.0.0.1:{node_port}/whoami"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!((reply.status, who(&reply)), (200, "web".to_owned()));
    // A second service asking for the same port is refused, whole.
    let dir = tempfile::tempdir().unwrap();
    let clash = write(
        dir.path(),
        "clash.yaml",
        &(pod("extra", "extra", "")
            + &service("np2", "web", "  type: NodePort\n").replace(
                "ports: [{port: 80}]",
                &format!("ports: [{{port: 80, nodePort: {node_port}}}]"),
            )),
    );
    let out = berth(home.path(), &["apply", "-f", &clash]);
    assert!(!out.success);
    assert!(out.stderr.contains("already allocated"), "{}", out.stderr);
    assert_eq!(pods(home.path()).len(), 1, "nothing of the refused apply");
}

#[tokio::test]
async fn the_shop_example_comes_up_and_its_services_call_each_other() {
    let home = tempfile::tempdir().unwrap();
    let shop = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop");
    let up = BerthRun::start_command(home.path(), &["up", shop]);
    let ingress = up.ingress();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !up.stdout().contains("berth up: 5 pods ready") {
        assert!(Instant::now() < deadline, "{}\n{}", up.stdout(), up.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        up.stdout()
            .contains("service/front: http://front.localhost:"),
        "{}",
        up.stdout()
    );
    let page = via(&ingress, "front.localhost", "/").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"), "{}", page.text());
    // front → api (3 replicas) → stock, by name, in-process.
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let reply = via(&ingress, "front.localhost", "/api/products").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let products: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert!(products["products"][0]["stock"].is_number(), "{products}");
        served_by.insert(products["served_by"].as_str().unwrap().to_owned());
    }
    assert_eq!(served_by.len(), 3, "{served_by:?}");
    // The shop's Ingress: its host's pages from front.
    let page = via(&ingress, "shop.localhost", "/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("<html"), "{}", page.text());
}

#[tokio::test]
async fn a_pod_relabelled_out_of_a_service_gets_no_more_of_its_traffic() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &[]);
    apply(
        home.path(),
        &(pod("one", "lab", "") + &pod("two", "lab", "") + &service("lab", "lab", "")),
    );
    wait_ready(home.path(), 2);
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..10 {
        let reply = via(&ingress, "lab.localhost", "/whoami").await;
        *seen.entry(who(&reply)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Labels are metadata: the pod keeps running, the service lets it go.
    apply(home.path(), &pod("two", "elsewhere", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replies: Vec<String> = {
            let mut r = Vec::new();
            for _ in 0..6 {
                r.push(who(&via(&ingress, "lab.localhost", "/whoami").await));
            }
            r
        };
        if replies.iter().all(|w| w == "one") {
            break;
        }
        assert!(Instant::now() < deadline, "two still serves: {replies:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let two = pods(home.path())
        .into_iter()
        .find(|p| p["metadata"]["name"] == "two")
        .unwrap();
    assert_eq!(
        two["status"]["containerStatuses"][0]["restartCount"], 0,
        "relabelling restarted it"
    );
}

#[tokio::test]
async fn a_request_waiting_on_a_service_goes_on_as_the_service_is_edited_or_deleted() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &["--endpoint-wait", "30s"]);
    apply(
        home.path(),
        &(pod("web", "web", "")
            + &service("later", "nothing", "")
            + &service("doomed", "nothing", "")),
    );
    wait_ready(home.path(), 1);

    // Waiting for an endpoint; the service is then edited to select one.
    let started = Instant::now();
    let waiting = tokio::spawn({
        let ingress = ingress.clone();
        async move { via(&ingress, "later.localhost", "/whoami").await }
    });
    let gone = tokio::spawn({
        let ingress = ingress.clone();
        async move { via(&ingress, "doomed.localhost", "/").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    apply(home.path(), &service("later", "web", ""));
    let reply = waiting.await.unwrap();
    assert_eq!((reply.status, who(&reply)), (200, "web".to_owned()));
    // Not at the end of its 30 s wait: as soon as the edit was routed.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A request waiting on a service that is deleted is answered then.
    ok(berth(home.path(), &["delete", "service", "doomed"]));
    let reply = gone.await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("went away"), "{}", reply.text());
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_too_slow_with_its_headers_is_cut_off_and_others_are_served() {
    use std::io::{Read as _, Write as _};
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &["--header-timeout", "1s"]);
    apply(
        home.path(),
        &(pod("web", "web", "") + &service("web", "web", "")),
    );
    wait_ready(home.path(), 1);

    // Headers begun and never finished: slowloris.
    let address = ingress.trim_start_matches("http://").trim_end_matches('/');
    let mut slow = std::net::TcpStream::connect(address).unwrap();
    slow.write_all(b"GET /whoami HTTP/1.1\r\nHost: web.localhost\r\n")
        .unwrap();
    let started = Instant::now();
    // Meanwhile the ingress answers everyone else.
    let reply = via(&ingress, "web.localhost", "/whoami").await;
    assert_eq!((reply.status, who(&reply)), (200, "web".to_owned()));

    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let ended = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(ended.is_ok(), "the connection was not closed: {ended:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn a_replica_at_its_concurrency_limit_passes_requests_on_or_they_wait_then_503() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = cluster(home.path(), &["--endpoint-wait", "2s"]);
    // One request at a time per replica; affinity sends this client's
    // requests to one replica, so only the limit moves them elsewhere.
    apply(
        home.path(),
        &(deployment("lim", 2, "", "").replace(
            "metadata: {labels: {app: lim}}",
            "metadata: {labels: {app: lim}, annotations: {berth.dev/max-concurrency: '1'}}",
        ) + &service("lim", "lim", "  sessionAffinity: ClientIP\n")),
    );
    wait_ready(home.path(), 2);
    let start = |path: &'static str| {
        let ingress = ingress.clone();
        tokio::spawn(async move { via(&ingress, "lim.localhost", path).await })
    };
    // (The pauses let a request reach its replica, or leave it: the last
    // of its response may reach the client before the router counts it
    // done.)
    let pause = || tokio::time::sleep(Duration::from_millis(1000));
    let sticky = who(&via(&ingress, "lim.localhost", "/whoami").await);
    pause().await;

    // The sticky replica busy: the next request goes to the other one.
    let busy = start("/sleep?ms=4000");
    pause().await;
    let spilled = via(&ingress, "lim.localhost", "/whoami").await;
    assert_eq!(spilled.status, 200, "{}", spilled.text());
    assert_ne!(who(&spilled), sticky, "the full replica was given more");
    assert_eq!(busy.await.unwrap().status, 200);
    pause().await;
    // With room again, affinity holds.
    let back = via(&ingress, "lim.localhost", "/whoami").await;
    assert_eq!(who(&back), sticky);
    pause().await;

    // Both busy past the wait: 503, saying why.
    let long = [start("/sleep?ms=6000"), start("/sleep?ms=6000")];
    pause().await;
    let waited = Instant::now();
    let refused = via(&ingress, "lim.localhost", "/whoami").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("concurrency limit"),
        "{}",
        refused.text()
    );
    assert!(
        waited.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        waited.elapsed()
    );
    for busy in long {
        assert_eq!(busy.await.unwrap().status, 200);
    }
    pause().await;

    // Both busy for less than the wait: the request waits its turn, and
    // takes the first room either replica has.
    let short = [start("/sleep?ms=1500"), start("/sleep?ms=1500")];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = via(&ingress, "lim.localhost", "/whoami").await;
    assert_eq!(queued.status, 200, "{}", queued.text());
    for busy in short {
        assert_eq!(busy.await.unwrap().status, 200);
    }
}
