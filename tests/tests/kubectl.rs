//! The Kubernetes API as kubectl sees it: the real kubectl against the real
//! daemon over HTTPS, with the kubeconfig the daemon writes and nothing
//! else. Each test keeps kubectl's discovery cache in a directory of its
//! own, so one daemon's answers never stand in for another's.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::kube::{build_image, write};
use berth_tests::{BerthRun, Finished, guests};

/// kubectl with the daemon's kubeconfig and a cache of its own.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    binary: String,
}

impl Kubectl {
    fn new(home: &Path) -> Kubectl {
        Kubectl::version(home, "kubectl")
    }

    fn version(home: &Path, binary: &str) -> Kubectl {
        let found = Command::new(binary)
            .args(["version", "--client"])
            .output()
            .unwrap_or_else(|e| {
                panic!("{binary} is needed for these tests (Debian package kubectl): {e}")
            });
        assert!(found.status.success(), "{binary} version --client failed");
        Kubectl {
            kubeconfig: home.join("kubeconfig"),
            cache: tempfile::tempdir().unwrap(),
            binary: binary.to_owned(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.cache.path());
        command
    }

    fn run(&self, args: &[&str]) -> Finished {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl");
        Finished {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs, and asserts success.
    fn ok(&self, args: &[&str]) -> Finished {
        let out = self.run(args);
        assert!(
            out.success,
            "kubectl {args:?}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        out
    }

    /// Polls `get ARGS -o json` until `done` says yes (30 s at most).
    fn wait_for(&self, args: &[&str], what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        loop {
            let out = self.run(&all);
            if out.success {
                let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                if done(&value) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "waited a minute for {what}: {}{}",
                out.stdout,
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {greeting: hello}
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
        env: [{name: MODE, value: one}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// Runs a kubectl that prints as it goes (`-w`), and its lines as they come.
fn watch_lines(
    k: &Kubectl,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = k
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines_rx)
}

fn items(list: &serde_json::Value) -> Vec<serde_json::Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn running(list: &serde_json::Value, n: usize) -> bool {
    let pods = items(list);
    pods.len() == n && pods.iter().all(|p| p["status"]["phase"] == "Running")
}

#[test]
fn kubectl_applies_lists_scales_patches_and_deletes_through_the_api() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(home.path().join("kubeconfig"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds the admin token");
    let k = Kubectl::new(home.path());

    let version = k.ok(&["version"]);
    assert!(
        version.stdout.contains("Server Version: v1.32.0+berth"),
        "{}",
        version.stdout
    );
    assert!(!version.stderr.contains("WARNING"), "{}", version.stderr);

    let resources = k.ok(&["api-resources"]);
    for line in [
        "pods ",
        "po ",
        "deployments ",
        "deploy ",
        "apps/v1 ",
        "replicasets ",
        "rs ",
        "services ",
        "svc ",
        "configmaps ",
        "cm ",
        "namespaces ",
        "ns ",
        "events ",
    ] {
        assert!(
            resources.stdout.contains(line),
            "{line}:\n{}",
            resources.stdout
        );
    }

    let files = tempfile::tempdir().unwrap();
    let shop = write(files.path(), "shop.yaml", SHOP);
    let applied = k.ok(&["apply", "-f", &shop]);
    assert_eq!(
        applied.stdout,
        "namespace/shop created\nconfigmap/settings created\ndeployment.apps/web created\nservice/web created\n"
    );
    // A namespace is Active, as the namespace controller says.
    let phase = k.ok(&["get", "namespace", "shop", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase.stdout, "Active");
    let again = k.ok(&["apply", "-f", &shop]);
    assert!(
        again.stdout.lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        again.stdout
    );
    k.wait_for(&["pods", "-n", "shop"], "3 running pods", |l| running(l, 3));

    let table = k.ok(&["get", "pods", "-n", "shop", "-o", "wide"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY   STATUS    RESTARTS   AGE   IP"),
        "{}",
        table.stdout
    );
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(
        lines[1].starts_with("web-") && lines[1].contains("Running"),
        "{}",
        table.stdout
    );

    let all = k.ok(&["get", "deploy,svc", "-A"]);
    assert!(
        all.stdout.contains("shop        deployment.apps/web   3/3"),
        "{}",
        all.stdout
    );
    assert!(all.stdout.contains("service/web"), "{}", all.stdout);

    // The service's endpoints are its ready pods.
    let endpoints = k.ok(&["get", "endpoints", "web", "-n", "shop", "-o", "json"]);
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints.stdout).unwrap();
    let addresses = endpoints["subsets"][0]["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 3, "{endpoints:#}");
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 8080);
    let slices = k.ok(&[
        "get",
        "endpointslices",
        "-n",
        "shop",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "name",
    ]);
    assert_eq!(slices.stdout.lines().count(), 1, "{}", slices.stdout);

    // A selector the server evaluates.
    let selected = k.ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-l",
        "app in (web),app!=db",
        "-o",
        "name",
    ]);
    assert_eq!(selected.stdout.lines().count(), 3, "{}", selected.stdout);
    // Pages of one, as kubectl asks with --chunk-size, still list them all.
    let paged = k.ok(&["get", "pods", "-A", "--chunk-size=1", "-o", "name"]);
    assert_eq!(paged.stdout.lines().count(), 3, "{}", paged.stdout);
    let none = k.run(&["get", "pods", "-n", "shop", "-l", "app=db"]);
    assert!(
        none.stderr
            .contains("No resources found in shop namespace."),
        "{}",
        none.stderr
    );

    // Client-side apply of a change: a strategic merge patch by container name.
    let edited = SHOP.replace("value: one", "value: two");
    let shop2 = write(files.path(), "shop2.yaml", &edited);
    let configured = k.ok(&["apply", "-f", &shop2]);
    assert!(
        configured.stdout.contains("deployment.apps/web configured"),
        "{}",
        configured.stdout
    );
    let deployment = k.ok(&["get", "deploy", "web", "-n", "shop", "-o", "json"]);
    let deployment: serde_json::Value = serde_json::from_str(&deployment.stdout).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "two"
    );
    assert_eq!(deployment["metadata"]["generation"], 2);

    let scaled = k.ok(&["scale", "deployment/web", "-n", "shop", "--replicas=2"]);
    assert_eq!(scaled.stdout.trim(), "deployment.apps/web scaled");
    k.wait_for(&["pods", "-n", "shop"], "2 running pods", |l| running(l, 2));

    let labelled = k.ok(&["label", "configmap", "settings", "-n", "shop", "tier=front"]);
    assert!(labelled.stdout.contains("labeled"), "{}", labelled.stdout);
    let by_label = k.ok(&["get", "cm", "-n", "shop", "-l", "tier=front", "-o", "name"]);
    assert_eq!(by_label.stdout.trim(), "configmap/settings");

    // Watching: the deletion of a pod arrives as an event.
    let pods = k.ok(&["get", "pods", "-n", "shop", "-o", "name"]);
    let victim = pods
        .stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("pod/")
        .to_owned();
    let (mut watch, lines_rx) = watch_lines(
        &k,
        &["get", "pods", "-n", "shop", "-w", "--output-watch-events"],
    );
    // Events are watched too: the replacement's arrive as they are made.
    let (mut event_watch, events_rx) = watch_lines(&k, &["get", "events", "-n", "shop", "-w"]);
    // The listing comes first.
    let first = lines_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("EVENT"), "{first}");
    let first = events_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("REASON"), "{first}");
    // What was there before the deletion is not what this test waits for.
    while events_rx.recv_timeout(Duration::from_millis(500)).is_ok() {}
    k.ok(&["delete", "pod", &victim, "-n", "shop", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            let done = line.starts_with("DELETED") && line.contains(&victim);
            seen.push(line);
            if done {
                break;
            }
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("DELETED") && l.contains(&victim)),
        "{seen:#?}"
    );
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !(events
            .iter()
            .any(|l: &String| l.contains("Killing") && l.contains(&victim))
            && events.iter().any(|l| l.contains("SuccessfulCreate")))
    {
        if let Ok(line) = events_rx.recv_timeout(Duration::from_millis(200)) {
            events.push(line);
        }
    }
    let _ = event_watch.kill();
    let _ = event_watch.wait();
    assert!(
        events
            .iter()
            .any(|l| l.contains("Killing") && l.contains(&victim))
            && events.iter().any(|l| l.contains("SuccessfulCreate")),
        "kubectl get events -w saw: {events:#?}"
    );
    // The replica set makes up for it.
    k.wait_for(&["pods", "-n", "shop"], "2 running pods again", |l| {
        running(l, 2)
            && items(l)
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str())
    });

    // Rollouts as kubectl reads them: status, history with change causes,
    // undo and restart.
    let status = k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    assert!(
        status
            .stdout
            .contains("deployment \"web\" successfully rolled out"),
        "{}",
        status.stdout
    );
    k.ok(&[
        "annotate",
        "deploy",
        "web",
        "-n",
        "shop",
        "kubernetes.io/change-cause=env two",
    ]);
    k.ok(&["set", "env", "deployment/web", "-n", "shop", "MODE=three"]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    let history = k.ok(&["rollout", "history", "deployment/web", "-n", "shop"]);
    let revisions: Vec<&str> = history
        .stdout
        .lines()
        .skip(2)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(revisions.len(), 3, "{}", history.stdout);
    assert!(
        revisions[2].starts_with('3') && revisions[2].contains("env two"),
        "{}",
        history.stdout
    );
    k.ok(&["rollout", "undo", "deployment/web", "-n", "shop"]);
    // Undo is a new revision (4), which the deployment names as on a
    // cluster: status waits for that revision, and refuses another.
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
        "--revision=4",
    ]);
    let other = k.run(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--revision=9",
    ]);
    assert!(
        !other.success
            && other
                .stderr
                .contains("desired revision (9) is different from the running revision (4)"),
        "{}",
        other.stderr
    );
    let env = k.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[0].value}",
    ]);
    assert_eq!(env.stdout, "two", "undo goes back to the revision before");
    k.ok(&["rollout", "restart", "deployment/web", "-n", "shop"]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);

    // A paused deployment rolls nothing out until it is resumed.
    let replica_sets = |k: &Kubectl| {
        let out = k.ok(&["get", "rs", "-n", "shop", "-o", "name"]);
        out.stdout.lines().count()
    };
    let before = replica_sets(&k);
    k.ok(&["rollout", "pause", "deployment/web", "-n", "shop"]);
    k.ok(&["set", "env", "deployment/web", "-n", "shop", "PAUSED=yes"]);
    k.wait_for(
        &["deploy", "web", "-n", "shop"],
        "the paused condition",
        |d| {
            d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "DeploymentPaused")
        },
    );
    assert_eq!(replica_sets(&k), before, "nothing rolled out while paused");
    k.ok(&["rollout", "resume", "deployment/web", "-n", "shop"]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    assert_eq!(replica_sets(&k), before + 1);

    // describe lists the pod's events; logs reads its output.
    let pod = k.ok(&["get", "pods", "-n", "shop", "-o", "name"]);
    let pod = pod.stdout.lines().next().unwrap().to_owned();
    let described = k.ok(&["describe", &pod, "-n", "shop"]);
    assert!(
        described.stdout.contains("Scheduled")
            && described.stdout.contains("Started container web"),
        "{}",
        described.stdout
    );
    k.ok(&["logs", &pod, "-n", "shop"]);

    // diff: nothing after an apply, something after an edit.
    let fresh = write(files.path(), "fresh.yaml", SHOP);
    k.ok(&["apply", "-f", &fresh]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    let same = k.run(&["diff", "-f", &fresh]);
    assert!(
        same.success && same.stdout.is_empty(),
        "{}{}",
        same.stdout,
        same.stderr
    );
    let edited = k
        .command(&["edit", "deployment/web", "-n", "shop"])
        .env("KUBE_EDITOR", "sed -i s/replicas:\\ 3/replicas:\\ 4/")
        .output()
        .unwrap();
    assert!(
        edited.status.success(),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
    let changed = k.run(&["diff", "-f", &fresh]);
    assert!(
        !changed.success && changed.stdout.contains("replicas"),
        "{}{}",
        changed.stdout,
        changed.stderr
    );
    let explained = k.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        explained.stdout.contains("rollingUpdate"),
        "{}",
        explained.stdout
    );

    // Deleting the deployment takes its replica sets and pods along.
    let deleted = k.ok(&["delete", "deployment", "web", "-n", "shop"]);
    assert_eq!(deleted.stdout.trim(), "deployment.apps \"web\" deleted");
    k.wait_for(&["pods", "-A"], "the pods to go", |l| items(l).is_empty());
    k.wait_for(&["rs", "-A"], "the replica sets to go", |l| {
        items(l).is_empty()
    });
    k.ok(&["delete", "namespace", "shop"]);
    let gone = k.run(&["get", "ns", "shop"]);
    assert!(
        gone.stderr.contains("namespaces \"shop\" not found"),
        "{}",
        gone.stderr
    );
}

#[test]
fn bad_input_changes_nothing_and_says_what_was_wrong() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();

    // A field Kubernetes has and berth does not support: 422, by path.
    let unsupported = write(
        files.path(),
        "tty.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\ndata: {a: b}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: web:1, tty: true}]\n",
    );
    let refused = k.run(&["apply", "-f", &unsupported]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("spec.containers[0]") && refused.stderr.contains("tty"),
        "{}",
        refused.stderr
    );
    let pods = k.run(&["get", "pods", "p"]);
    assert!(
        pods.stderr.contains("pods \"p\" not found"),
        "{}",
        pods.stderr
    );

    // A field Kubernetes does not know: refused under kubectl's default
    // (strict) validation, dropped with a warning under --validate=warn,
    // dropped silently with --validate=false; tty stays refused whatever
    // the mode.
    let typo = write(
        files.path(),
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, colour: blue}\ndata: {a: b}\n",
    );
    let strict = k.run(&["apply", "-f", &typo]);
    assert!(!strict.success);
    assert!(
        strict
            .stderr
            .contains("strict decoding error: unknown field \"metadata.colour\""),
        "{}",
        strict.stderr
    );
    assert!(!k.run(&["get", "cm", "typo"]).success, "nothing stored");
    let warned = k.ok(&["apply", "-f", &typo, "--validate=warn"]);
    assert!(
        warned
            .stderr
            .contains("Warning: unknown field \"metadata.colour\""),
        "{}",
        warned.stderr
    );
    k.ok(&["delete", "cm", "typo"]);
    let quiet = k.ok(&["apply", "-f", &typo, "--validate=false"]);
    assert!(!quiet.stderr.contains("colour"), "{}", quiet.stderr);
    let lenient = k.run(&["apply", "-f", &unsupported, "--validate=false"]);
    assert!(
        !lenient.success && lenient.stderr.contains("tty"),
        "{}",
        lenient.stderr
    );

    // A wrong token: 401, and kubectl says so.
    let wrong = k.run(&["--token", "not-the-token", "get", "pods"]);
    assert!(!wrong.success);
    assert!(
        wrong.stderr.contains("You must be logged in to the server"),
        "{}",
        wrong.stderr
    );

    // A stale update: 409.
    k.ok(&[
        "apply",
        "-f",
        &write(
            files.path(),
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
        ),
    ]);
    let current = k.ok(&["get", "cm", "c", "-o", "json"]);
    let mut stale: serde_json::Value = serde_json::from_str(&current.stdout).unwrap();
    k.ok(&["label", "cm", "c", "x=y"]);
    stale["data"]["a"] = "changed".into();
    let stale_file = write(files.path(), "stale.json", &stale.to_string());
    let conflict = k.run(&["replace", "-f", &stale_file]);
    assert!(!conflict.success);
    assert!(
        conflict.stderr.contains("the object has been modified"),
        "{}",
        conflict.stderr
    );
    let kept = k.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]);
    assert_eq!(kept.stdout, "b");

    // A body past the limit: 413, and nothing stored.
    let huge = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"huge\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(10 << 20)
    );
    let huge_file = write(files.path(), "huge.json", &huge);
    let too_large = k.run(&["create", "-f", &huge_file]);
    assert!(!too_large.success);
    assert!(
        too_large.stderr.contains("too large"),
        "{}",
        too_large.stderr
    );
    let missing = k.run(&["get", "cm", "huge"]);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[test]
fn every_packaged_kubectl_applies_gets_and_deletes() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let files = tempfile::tempdir().unwrap();
    let manifest = write(
        files.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: versioned}\ndata: {a: b}\n",
    );
    // The kubectl package puts kubectl.1.NN beside the kubectl it links.
    let kubectl = which("kubectl");
    let dir = kubectl.canonicalize().unwrap().parent().unwrap().to_owned();
    for minor in 27..=33 {
        let binary = dir.join(format!("kubectl.1.{minor}"));
        let binary = binary.to_str().unwrap().to_owned();
        let k = Kubectl::version(home.path(), &binary);
        let applied = k.ok(&["apply", "-f", &manifest]);
        assert!(
            applied.stdout.contains("configmap/versioned"),
            "{binary}: {}",
            applied.stdout
        );
        let got = k.ok(&["get", "cm", "versioned"]);
        assert!(got.stdout.starts_with("NAME"), "{binary}: {}", got.stdout);
        k.ok(&["delete", "cm", "versioned"]);
    }
}

/// `name` on the PATH.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is needed for these tests (Debian package kubectl)"))
}

/// The official Python client (from PyPI, in the venv tests/prepare.sh makes).
const PYTHON_CLIENT: &str = r#"
import sys, threading
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"made-by": "python"}),
                        data={"a": "1"})
created = core.create_namespaced_config_map("default", cm)
assert created.metadata.uid, created
listed = core.list_namespaced_config_map("default", label_selector="made-by=python")
assert [c.metadata.name for c in listed.items] == ["py"], listed
assert core.list_namespaced_config_map("default", label_selector="made-by!=python").items == []

# A watch from the list's resourceVersion sees the patch and the delete.
seen = []
def follow():
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default",
                          resource_version=listed.metadata.resource_version,
                          timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name,
                     (event["object"].data or {}).get("a")))
        if event["type"] == "DELETED":
            w.stop()
watcher = threading.Thread(target=follow)
watcher.start()

patched = core.patch_namespaced_config_map("py", "default", {"data": {"a": "2"}})
assert patched.data == {"a": "2"}, patched
core.delete_namespaced_config_map("py", "default")
watcher.join(30)
assert ("MODIFIED", "py", "2") in seen and ("DELETED", "py", "2") in seen, seen

try:
    core.read_namespaced_config_map("py", "default")
    raise SystemExit("still there")
except client.exceptions.ApiException as e:
    assert e.status == 404, e

nodes = core.list_node()
assert nodes.items and nodes.items[0].status.capacity["cpu"], nodes
print("python client ok")
"#;

#[test]
fn the_python_client_creates_lists_watches_patches_and_deletes() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: tests/prepare.sh makes it (the PyPI package kubernetes)",
        python.display()
    );
    let home = tempfile::tempdir().unwrap();
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let out = Command::new(&python)
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(home.path().join("kubeconfig"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("python client ok"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn a_rollout_watched_through_a_kill_9_of_the_daemon_completes_after_its_restart() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let port = berth_tests::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut first = BerthRun::start_command(home.path(), &["daemon", "--api-listen", &listen]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    let shop = write(files.path(), "shop.yaml", SHOP);
    k.ok(&["apply", "-f", &shop]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "shop",
        "--timeout=60s",
    ]);

    // A rollout that cannot finish: its image does not exist.
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        "shop",
        "web=missing:1",
    ]);
    let status = k
        .command(&[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=90s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    first.kill();
    let _second = BerthRun::start_command(home.path(), &["daemon", "--api-listen", &listen]);
    // The fix lands on the restarted daemon; the watch resumes or relists.
    k.ok(&["set", "image", "deployment/web", "-n", "shop", "web=web:1"]);
    let out = status.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("successfully rolled out"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubectl_s_typed_commands_send_protobuf_and_are_understood() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    // kubectl 1.32's typed clients send these bodies as protobuf.
    k.ok(&["create", "namespace", "typed"]);
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "typed",
        "--from-literal=greeting=hello",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "key",
        "-n",
        "typed",
        "--from-literal=token=s3cr3t",
    ]);
    k.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "typed",
        "--image=web:1",
        "--replicas=2",
    ]);
    let greeting = k.ok(&[
        "get",
        "cm",
        "settings",
        "-n",
        "typed",
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert_eq!(greeting.stdout, "hello");
    let token = k.ok(&[
        "get",
        "secret",
        "key",
        "-n",
        "typed",
        "-o",
        "jsonpath={.data.token}",
    ]);
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.stdout.trim())
        .unwrap();
    assert_eq!(decoded, b"s3cr3t");
    k.wait_for(&["pods", "-n", "typed"], "2 running pods", |l| {
        running(l, 2)
    });
    let can = k.ok(&["auth", "can-i", "create", "deployments"]);
    assert_eq!(can.stdout.trim(), "yes");
    let namespaces = k.ok(&["get", "ns", "-o", "name"]);
    assert_eq!(namespaces.stdout, "namespace/default\nnamespace/typed\n");
}

#[test]
fn kubectl_exec_runs_in_a_linux_container_and_passes_its_exit_code_back() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    let pods = write(
        files.path(),
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  containers:\n  - {name: sh, image: busybox:1, command: [sh, -c, 'echo inside > /tmp/mark; exec sleep 3600']}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: guest}\nspec:\n  containers: [{name: web, image: web:1}]\n",
    );
    k.ok(&["apply", "-f", &pods]);
    k.wait_for(&["pods"], "both pods running", |l| running(l, 2));

    // Output and the container's own view: its file, its hostname.
    let out = k.ok(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "cat /tmp/mark; hostname; echo err >&2",
    ]);
    assert_eq!(out.stdout, "inside\nbox\n");
    assert!(out.stderr.contains("err"), "{}", out.stderr);

    // Standard input reaches the command.
    let mut child = k
        .command(&["exec", "-i", "box", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from stdin\n")
        .unwrap();
    let upper = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&upper.stdout), "HELLO FROM STDIN\n");

    // The exit code comes back as kubectl's own.
    let failed = k.run(&["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert!(!failed.success);
    let code = k
        .command(&["exec", "box", "--", "sh", "-c", "exit 3"])
        .status()
        .unwrap()
        .code();
    assert_eq!(code, Some(3));

    // A wasm container has nothing to exec into, and says so.
    let wasm = k.run(&["exec", "guest", "--", "ls"]);
    assert!(!wasm.success);
    assert!(wasm.stderr.contains("wasm component"), "{}", wasm.stderr);
}

/// A `kubectl port-forward` running in the background, killed when dropped.
struct Forward {
    child: std::process::Child,
    /// The local address kubectl listens on.
    local: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Forward {
    /// `kubectl port-forward pod/POD :PORT` (a free local port), with
    /// `env` set, once it says where it listens.
    fn start(k: &Kubectl, pod: &str, port: u16, env: &[(&str, &str)]) -> Forward {
        let mut child = k
            .command(&["port-forward", &format!("pod/{pod}"), &format!(":{port}")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            sink.lock().unwrap().push_str(&text);
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let local = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.wait();
                panic!("port-forward ended: {}", stderr.lock().unwrap());
            };
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                break format!("127.0.0.1:{}", rest.split_whitespace().next().unwrap());
            }
        };
        // kubectl prints a line per connection: keep reading them.
        std::thread::spawn(move || for _ in lines {});
        Forward {
            child,
            local,
            stderr,
        }
    }

    /// An HTTP/1.0 request for `path` through the forward: the whole answer.
    fn get(&self, path: &str) -> String {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&self.local).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// Waits for kubectl to exit (it does when the pod reports an error).
    fn finish(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "port-forward did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_port_forward_reaches_wasm_and_linux_pods_over_both_transports() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    let pods = write(
        files.path(),
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  containers:\n  - {name: httpd, image: busybox:1, command: [httpd, -f, -p, '8000', -h, /www]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: guest}\nspec:\n  containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]\n",
    );
    k.ok(&["apply", "-f", &pods]);
    k.wait_for(&["pods"], "both pods running", |l| running(l, 2));

    // kubectl 1.32 tunnels SPDY in a WebSocket; told not to, or as 1.27,
    // it upgrades the connection to SPDY itself.
    for env in [&[][..], &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..]] {
        let wasm = Forward::start(&k, "guest", 8080, env);
        for path in ["/", "/again"] {
            let answer = wasm.get(path);
            assert!(answer.starts_with("HTTP/1.0 200"), "{env:?}: {answer}");
            assert!(
                answer.ends_with(&format!("hello from {path}\n")),
                "{answer}"
            );
        }
        let linux = Forward::start(&k, "box", 8000, env);
        let answer = linux.get("/index.html");
        assert!(answer.contains("200 OK"), "{env:?}: {answer}");
        assert!(answer.ends_with("hello from busybox\n"), "{answer}");
    }
    let dir = which("kubectl")
        .canonicalize()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let old = Kubectl::version(home.path(), dir.join("kubectl.1.27").to_str().unwrap());
    let answer = Forward::start(&old, "guest", 8080, &[]).get("/old");
    assert!(answer.ends_with("hello from /old\n"), "{answer}");

    // A port the wasm pod does not serve: kubectl says why, and stops.
    let nowhere = Forward::start(&k, "guest", 9999, &[]);
    let _ = nowhere.get("/");
    let said = nowhere.finish();
    assert!(
        said.contains("error forwarding port 9999 to pod guest") && said.contains("not 9999"),
        "{said}"
    );
    // Nothing listens on the Linux pod's port 9999: the dial's error.
    let closed = Forward::start(&k, "box", 9999, &[]);
    let _ = closed.get("/");
    let said = closed.finish();
    assert!(
        said.contains("connection refused") || said.contains("Connection refused"),
        "{said}"
    );
}

#[test]
fn kubectl_logs_follows_new_lines_attach_shows_them_and_logs_read_the_previous_run() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    build_image(home.path(), Path::new(guests::MISBEHAVE), "misbehave:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    // A Linux container that writes a numbered line five times a second,
    // and a wasm one whose every liveness probe makes it trap (and log
    // why) and restart.
    let pods = write(
        files.path(),
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ticker}\nspec:\n  containers:\n  - {name: sh, image: busybox:1, command: [sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done']}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: crash}\nspec:\n  containers:\n  - name: app\n    image: misbehave:1\n    livenessProbe: {httpGet: {path: /trap, port: 8080}, periodSeconds: 1, failureThreshold: 1}\n",
    );
    k.ok(&["apply", "-f", &pods]);
    k.wait_for(&["pod", "ticker"], "the ticker running", |p| {
        p["status"]["phase"] == "Running"
    });

    // Following: lines written after kubectl started arrive as they are.
    let tick = |line: &str| {
        line.strip_prefix("tick ")
            .and_then(|n| n.parse::<u64>().ok())
    };
    std::thread::sleep(Duration::from_millis(500));
    let written = k.ok(&["logs", "ticker"]);
    let so_far = written
        .stdout
        .lines()
        .filter_map(tick)
        .max()
        .expect("ticks so far");
    let mut follow = k
        .command(&["logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines {
        let n = tick(&line.unwrap()).expect("only ticks");
        seen.push(n);
        if n >= so_far + 3 {
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(seen.first(), Some(&0), "from the start: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");

    // Attaching shows the output from then on, as it is written.
    let before = k.ok(&["logs", "ticker"]);
    let last = before.stdout.lines().filter_map(tick).max().unwrap();
    let mut attach = k
        .command(&["attach", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let attached: Vec<u64> = BufReader::new(attach.stdout.take().unwrap())
        .lines()
        .filter_map(|l| tick(&l.unwrap()))
        .take(3)
        .collect();
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(
        attached.len() == 3 && attached[0] >= last,
        "{attached:?} after {last}"
    );
    assert!(
        attached.windows(2).all(|w| w[1] == w[0] + 1),
        "{attached:?}"
    );
    let input = k.run(&["attach", "-i", "ticker"]);
    assert!(!input.success);
    assert!(
        input.stderr.contains("without standard input"),
        "{}",
        input.stderr
    );

    // The run before the restart, with why it ended.
    k.wait_for(&["pod", "crash"], "a restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    let previous = k.ok(&["logs", "crash", "--previous"]);
    assert!(
        previous.stdout.contains("guest asked to trap"),
        "{}",
        previous.stdout
    );
}

#[test]
fn deletes_wait_for_pods_to_stop_and_foreground_for_dependents() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::busybox::load(home.path(), "busybox:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    // Containers that ignore SIGTERM: only the grace period's SIGKILL
    // stops them, so a deletion takes that long.
    let stubborn = "command: [sh, -c, 'trap \"\" TERM; while true; do sleep 1; done']";
    let manifest = write(
        files.path(),
        "stubborn.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: solo}}\nspec:\n  terminationGracePeriodSeconds: 60\n  containers:\n  - {{name: sh, image: busybox:1, {stubborn}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: crew}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: crew}}}}\n  template:\n    metadata: {{labels: {{app: crew}}}}\n    spec:\n      terminationGracePeriodSeconds: 4\n      containers:\n      - {{name: sh, image: busybox:1, {stubborn}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: crew}}\nspec:\n  selector: {{app: crew}}\n  ports: [{{port: 80}}]\n"
        ),
    );
    k.ok(&["apply", "-f", &manifest]);
    k.wait_for(&["pods"], "three pods running", |l| running(l, 3));

    // A pod deleted with a grace period of its own is Terminating until
    // its container is killed at the end of it, then gone.
    let asked = Instant::now();
    k.ok(&["delete", "pod", "solo", "--grace-period=2", "--wait=false"]);
    let marked = k.ok(&[
        "get",
        "pod",
        "solo",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ]);
    assert_eq!(marked.stdout, "2");
    let listed = k.ok(&["get", "pod", "solo"]);
    assert!(listed.stdout.contains("Terminating"), "{}", listed.stdout);
    k.ok(&["wait", "--for=delete", "pod/solo", "--timeout=30s"]);
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(30),
        "the pod's own 60 s gave way to the deletion's 2 s: {took:?}"
    );

    // Foreground: the deployment stays, marked, until its replica set and
    // pods have gone.
    k.ok(&[
        "delete",
        "deployment",
        "crew",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let owner = k.ok(&[
        "get",
        "deployment",
        "crew",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(
        owner.stdout.contains("foregroundDeletion"),
        "{}",
        owner.stdout
    );
    let pods = k.ok(&["get", "pods", "-l", "app=crew", "-o", "name"]);
    assert_eq!(
        pods.stdout.lines().count(),
        2,
        "still there: {}",
        pods.stdout
    );
    // Their endpoints say they are terminating, and take no new traffic.
    k.wait_for(
        &["endpointslices", "-l", "kubernetes.io/service-name=crew"],
        "terminating endpoints",
        |l| {
            items(l).iter().any(|slice| {
                slice["endpoints"].as_array().is_some_and(|e| {
                    !e.is_empty()
                        && e.iter().all(|e| {
                            e["conditions"]["terminating"] == true
                                && e["conditions"]["ready"] == false
                        })
                })
            })
        },
    );
    k.ok(&["wait", "--for=delete", "deployment/crew", "--timeout=60s"]);
    let left = k.ok(&["get", "rs,pods", "-o", "name"]);
    assert_eq!(left.stdout, "", "the dependents went first");

    // Forced, with no grace period: gone at once.
    k.ok(&["apply", "-f", &manifest]);
    k.wait_for(&["pod", "solo"], "solo running", |p| {
        p["status"]["phase"] == "Running"
    });
    let forced = Instant::now();
    k.ok(&["delete", "pod", "solo", "--grace-period=0", "--force"]);
    assert!(forced.elapsed() < Duration::from_secs(10));
    assert!(!k.run(&["get", "pod", "solo"]).success);
}

#[test]
fn a_huge_replica_count_ends_in_failed_create_at_the_namespace_quota() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = BerthRun::start_command(home.path(), &["daemon", "--pod-quota", "3"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    let huge = write(
        files.path(),
        "huge.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: huge}\nspec:\n  replicas: 1000000\n  selector: {matchLabels: {app: huge}}\n  template:\n    metadata: {labels: {app: huge}}\n    spec:\n      containers: [{name: web, image: nowhere:1}]\n",
    );
    k.ok(&["apply", "-f", &huge]);
    k.wait_for(&["deployment", "huge"], "ReplicaFailure", |d| {
        d["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "ReplicaFailure" && c["reason"] == "FailedCreate")
        })
    });
    let pods = k.ok(&["get", "pods", "-o", "name"]);
    assert_eq!(pods.stdout.lines().count(), 3, "{}", pods.stdout);
    let events = k.ok(&["get", "events"]);
    assert!(
        events.stdout.contains("exceeded quota"),
        "{}",
        events.stdout
    );
    // A pod of its own past the quota: 403, as admission answers.
    let one = write(
        files.path(),
        "one.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec:\n  containers: [{name: web, image: nowhere:1}]\n",
    );
    let refused = k.run(&["apply", "-f", &one]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("Forbidden") && refused.stderr.contains("exceeded quota"),
        "{}",
        refused.stderr
    );
}

#[test]
fn server_side_apply_tracks_managers_and_names_their_conflicts() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ssa}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: ssa}}\n  template:\n    metadata: {labels: {app: ssa}}\n    spec:\n      containers: [{name: web, image: web:1}]\n";
    let file = write(files.path(), "ssa.yaml", manifest);
    let created = k.ok(&["apply", "--server-side", "-f", &file]);
    assert_eq!(
        created.stdout.trim(),
        "deployment.apps/ssa serverside-applied"
    );
    k.ok(&["apply", "--server-side", "-f", &file]);
    let fields = k.ok(&[
        "get",
        "deploy",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}",
    ]);
    assert_eq!(fields.stdout, "kubectl Apply");

    // Another manager takes spec.replicas; applying it again conflicts.
    k.ok(&["scale", "deployment/ssa", "--replicas=3"]);
    let conflict = k.run(&["apply", "--server-side", "-f", &file]);
    assert!(!conflict.success);
    assert!(
        conflict.stderr.contains("Apply failed with 1 conflict")
            && conflict.stderr.contains(".spec.replicas"),
        "{}",
        conflict.stderr
    );
    let replicas = k.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas.stdout, "3", "a refused apply changes nothing");

    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &file]);
    let replicas = k.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas.stdout, "2");

    // A field dropped from the applied configuration is removed.
    let fewer = manifest.replace(
        "metadata: {labels: {app: ssa}}",
        "metadata: {labels: {app: ssa, tier: web}}",
    );
    k.ok(&[
        "apply",
        "--server-side",
        "-f",
        &write(files.path(), "ssa2.yaml", &fewer),
    ]);
    let labels = k.ok(&[
        "get",
        "deploy",
        "ssa",
        "-o",
        "jsonpath={.spec.template.metadata.labels.tier}",
    ]);
    assert_eq!(labels.stdout, "web");
    k.ok(&["apply", "--server-side", "-f", &file]);
    let labels = k.ok(&[
        "get",
        "deploy",
        "ssa",
        "-o",
        "jsonpath={.spec.template.metadata.labels}",
    ]);
    assert!(!labels.stdout.contains("tier"), "{}", labels.stdout);
}

/// A Deployment as charts write them: every field berth gives a meaning
/// rather than refuses.
const CHART: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: chart}
spec:
  selector: {matchLabels: {app: chart}}
  template:
    metadata: {labels: {app: chart}}
    spec:
      serviceAccountName: chart
      automountServiceAccountToken: false
      priorityClassName: high
      imagePullSecrets: [{name: regcred}]
      nodeSelector: {kubernetes.io/os: linux}
      tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/os, operator: In, values: [linux]}]}]
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: chart}}}
      securityContext: {runAsNonRoot: true, runAsUser: 1000, fsGroup: 2000, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: web
        image: web:1
        imagePullPolicy: IfNotPresent
        ports: [{containerPort: 8080, protocol: TCP}]
        terminationMessagePolicy: FallbackToLogsOnError
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
"#;

#[test]
fn a_chart_s_deployment_runs_shows_kubernetes_defaults_and_places_by_selector() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::HELLO), "web:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let files = tempfile::tempdir().unwrap();
    let chart = write(files.path(), "chart.yaml", CHART);
    k.ok(&["apply", "-f", &chart]);
    k.wait_for(
        &["pods", "-l", "app=chart"],
        "the chart's pod running",
        |l| running(l, 1),
    );
    // Shown as a cluster shows it: the defaults filled in, the fields kept.
    let shown = k.ok(&["get", "deployment", "chart", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(spec["dnsPolicy"], "ClusterFirst", "{spec:#}");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["serviceAccountName"], "chart");
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        spec["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(spec["securityContext"]["fsGroup"], 2000);
    let pod = k.ok(&["get", "pods", "-l", "app=chart", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&pod.stdout).unwrap();
    assert_eq!(pod["items"][0]["spec"]["enableServiceLinks"], true);
    // diff sees nothing, and what get printed, replaced, rolls nothing out.
    let diff = k.run(&["diff", "-f", &chart]);
    assert!(diff.success, "{}{}", diff.stdout, diff.stderr);
    let printed = write(files.path(), "printed.json", &shown.stdout);
    k.ok(&["replace", "-f", &printed]);
    let sets = k.ok(&["get", "replicasets", "-o", "name"]);
    assert_eq!(sets.stdout.lines().count(), 1, "{}", sets.stdout);

    // A pod no node matches waits, with kube-scheduler's reason.
    let elsewhere = write(
        files.path(),
        "elsewhere.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: elsewhere}\nspec:\n  nodeSelector: {kubernetes.io/arch: s390x}\n  containers: [{name: web, image: web:1}]\n",
    );
    k.ok(&["apply", "-f", &elsewhere]);
    k.wait_for(&["pod", "elsewhere"], "an unschedulable pod", |p| {
        p["status"]["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("didn't match Pod's node affinity/selector"))
    });
    // A wasm guest is given no Linux capabilities.
    let capable = write(
        files.path(),
        "capable.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: capable}\nspec:\n  containers:\n  - name: web\n    image: web:1\n    securityContext: {capabilities: {add: [NET_ADMIN]}}\n",
    );
    k.ok(&["apply", "-f", &capable]);
    k.wait_for(&["pod", "capable"], "a refused wasm capability", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    // Nor a process to exec a probe in: refused, not run as a TCP check.
    let probed = write(
        files.path(),
        "probed.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probed}\nspec:\n  containers:\n  - name: web\n    image: web:1\n    readinessProbe: {exec: {command: [\"true\"]}}\n",
    );
    k.ok(&["apply", "-f", &probed]);
    k.wait_for(&["pod", "probed"], "a refused exec probe on wasm", |p| {
        let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        waiting["reason"] == "CreateContainerConfigError"
            && waiting["message"]
                .as_str()
                .is_some_and(|m| m.contains("readinessProbe.exec"))
    });
    // What berth cannot give is refused whole, the field named.
    let privileged = write(
        files.path(),
        "privileged.yaml",
        &CHART.replace("allowPrivilegeEscalation: false", "privileged: true"),
    );
    let refused = k.run(&["apply", "-f", &privileged]);
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("spec.template.spec.containers[0].securityContext.privileged"),
        "{}",
        refused.stderr
    );
}

const JOBS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: step, image: "tool:1", args: [sleep, "700"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: step
        image: "tool:1"
        args: [env, JOB_COMPLETION_INDEX, POD]
        # The downward API, as charts use it.
        env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: step, image: "tool:1", args: [exit, "1"]}]
"#;

/// Seconds since the epoch of an RFC 3339 time.
fn epoch_seconds(time: &serde_json::Value) -> u64 {
    let text = time.as_str().expect("a timestamp");
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn jobs_run_to_completion_index_their_pods_and_fail_past_their_backoff_limit() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::TOOL), "tool:1");
    let _daemon = BerthRun::start_command(
        home.path(),
        &["daemon", "--backoff-base", "1s", "--backoff-cap", "10s"],
    );
    let k = Kubectl::new(home.path());
    let resources = k.ok(&["api-resources", "--api-group=batch"]);
    assert!(resources.stdout.contains("jobs"), "{}", resources.stdout);

    let dir = tempfile::tempdir().unwrap();
    let jobs = write(dir.path(), "jobs.yaml", JOBS);
    k.ok(&["apply", "-f", &jobs]);

    // At most two of batch's pods run at any moment, and two do.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = k.ok(&[
            "get",
            "pods",
            "-l",
            "batch.kubernetes.io/job-name=batch",
            "-o",
            "json",
        ]);
        let pods: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let items = items(&pods);
        let running = items
            .iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .count();
        most = most.max(running);
        assert!(running <= 2, "{running} of batch's pods at once");
        let succeeded = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Succeeded")
            .count();
        if succeeded == 5 {
            assert_eq!(items.len(), 5);
            break;
        }
        assert!(Instant::now() < deadline, "batch never finished: {pods:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 2);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "job/indexed",
        "--timeout=60s",
    ]);
    let table = k.ok(&["get", "jobs"]);
    let header = table.stdout.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    let batch_row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("batch "))
        .unwrap();
    assert!(
        batch_row.contains("Complete") && batch_row.contains("5/5"),
        "{}",
        table.stdout
    );
    // kubectl finds a job's pods by its selector.
    let logs = k.ok(&["logs", "job/indexed"]);
    assert!(
        logs.stdout.starts_with("JOB_COMPLETION_INDEX="),
        "{}",
        logs.stdout
    );

    // Each index ran once, and knew its index and its pod's name.
    let out = k.ok(&["get", "job", "indexed", "-o", "json"]);
    let indexed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(indexed["status"]["completedIndexes"], "0-2", "{indexed:#}");
    assert_eq!(indexed["status"]["succeeded"], 3);
    let described = berth_tests::ok(berth_tests::berth(
        home.path(),
        &["describe", "job", "indexed"],
    ));
    for line in [
        "Completion Mode:",
        "Indexed",
        "Completed Indexes:",
        "0-2",
        "3 Succeeded",
        "Complete",
    ] {
        assert!(
            described.stdout.contains(line),
            "{line}: {}",
            described.stdout
        );
    }
    let out = k.ok(&["get", "pods", "-l", "job-name=indexed", "-o", "json"]);
    let mut seen = Vec::new();
    for pod in items(&serde_json::from_str(&out.stdout).unwrap()) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap();
        let logs = k.ok(&["logs", name]);
        assert_eq!(
            logs.stdout,
            format!("JOB_COMPLETION_INDEX={index}\nPOD={name}\n")
        );
        seen.push(index.to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // Applied again, unchanged, it stays as it is; its template may not
    // change, its parallelism may.
    k.ok(&["apply", "-f", &jobs]);
    let refused = k.run(&["set", "image", "job/indexed", "step=tool:2"]);
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("Job \"indexed\" is invalid: spec.template: field is immutable"),
        "{}",
        refused.stderr
    );
    k.ok(&[
        "patch",
        "job",
        "indexed",
        "-p",
        r#"{"spec":{"parallelism":1}}"#,
    ]);

    // A job whose pod keeps failing: three pods, each after a longer wait,
    // then Failed as Kubernetes words it.
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=60s",
    ]);
    let out = k.ok(&["get", "job", "failing", "-o", "json"]);
    let failing: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(failing["status"]["failed"], 3, "{failing:#}");
    let failed = failing["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    let out = k.ok(&["get", "pods", "-l", "job-name=failing", "-o", "json"]);
    let mut created: Vec<u64> = items(&serde_json::from_str(&out.stdout).unwrap())
        .iter()
        .map(|p| epoch_seconds(&p["metadata"]["creationTimestamp"]))
        .collect();
    created.sort();
    assert_eq!(created.len(), 3);
    // Back-off of 1 s, then 2 s (timestamps are to the second).
    assert!(
        created[1] - created[0] >= 1 && created[2] - created[1] >= 2,
        "{created:?}"
    );
    let table = k.ok(&["get", "jobs", "failing"]);
    assert!(table.stdout.contains("Failed"), "{}", table.stdout);

    // kubectl's typed create sends protobuf.
    k.ok(&[
        "create",
        "job",
        "once",
        "--image=tool:1",
        "--",
        "tool",
        "args",
        "hi",
    ]);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    let logs = k.ok(&["logs", "job/once"]);
    assert_eq!(logs.stdout, "tool args hi\n");

    // Bad input: named, and nothing stored.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\nspec:\n  completions: -1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: \"tool:1\"}]\n",
    );
    let refused = k.run(&["apply", "-f", &bad]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("spec.completions"),
        "{}",
        refused.stderr
    );
    let always = write(
        dir.path(),
        "always.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: \"tool:1\"}]\n",
    );
    let refused = k.run(&["apply", "-f", &always]);
    assert!(
        refused.stderr.contains("spec.template.spec.restartPolicy"),
        "{}",
        refused.stderr
    );
    assert!(!k.run(&["get", "job", "bad"]).success);

    // Deleting a job takes its pods.
    k.ok(&["delete", "job", "batch", "--wait=true"]);
    k.wait_for(
        &["pods", "-l", "job-name=batch"],
        "batch's pods to go",
        |list| items(list).is_empty(),
    );
}

#[test]
fn a_cron_job_runs_on_its_schedule_and_kubectl_makes_a_job_from_it() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::TOOL), "tool:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let dir = tempfile::tempdir().unwrap();
    let cron = write(
        dir.path(),
        "cron.yaml",
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  timeZone: Europe/Berlin
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: step, image: "tool:1", args: [args, tick]}]
"#,
    );
    k.ok(&["apply", "-f", &cron]);
    let table = k.ok(&["get", "cronjobs"]);
    let mut lines = table.stdout.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..6], ["tick", "*", "*", "*", "*", "*"]);
    assert_eq!(row[6..9], ["Europe/Berlin", "False", "0"]);
    // Not scheduled yet, unless the minute turned between apply and get.
    assert!(
        row[9] == "<none>" || row[9] == "0s" || row[9] == "1s",
        "{row:?}"
    );

    // kubectl's own copy of the template, owned by the cron job.
    k.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/by-hand",
        "--timeout=60s",
    ]);
    assert_eq!(k.ok(&["logs", "job/by-hand"]).stdout, "step args tick\n");

    // The first scheduled run, within a minute.
    // Up to a minute after it was made, and the pass that notices.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = k.ok(&["get", "cronjob", "tick", "-o", "json"]);
        let cron: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        if cron["status"]["lastScheduleTime"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled run: {cron:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = k.ok(&["get", "cronjob", "tick", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let scheduled = epoch_seconds(&status["status"]["lastScheduleTime"]);
    assert_eq!(scheduled % 60, 0, "runs on the minute: {status:#}");
    let name = format!("tick-{}", scheduled / 60);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    let job = k.ok(&["get", "job", &name, "-o", "json"]);
    let job: serde_json::Value = serde_json::from_str(&job.stdout).unwrap();
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with("+01:00")),
        "in the cron job's zone: {job:#}"
    );

    // A schedule that is not one: named, nothing stored.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &std::fs::read_to_string(&cron)
            .unwrap()
            .replace("name: tick", "name: bad")
            .replace("\"* * * * *\"", "\"every minute\""),
    );
    let refused = k.run(&["apply", "-f", &bad]);
    assert!(
        refused.stderr.contains("spec.schedule") && refused.stderr.contains("every minute"),
        "{}",
        refused.stderr
    );
    assert!(!k.run(&["get", "cronjob", "bad"]).success);

    // Deleted, it takes its jobs and their pods.
    k.ok(&["delete", "cronjob", "tick"]);
    k.wait_for(&["jobs"], "the cron job's jobs to go", |list| {
        items(list).is_empty()
    });
}

/// Three services of the echo guest, each answering with its pods' names,
/// and an Ingress over them by host and path.
const INGRESS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: front}
spec:
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec: {containers: [{name: web, image: "web:1"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: web, image: "web:1"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: admin}
spec:
  selector: {matchLabels: {app: admin}}
  template:
    metadata: {labels: {app: admin}}
    spec: {containers: [{name: web, image: "web:1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: front}
spec: {selector: {app: front}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {selector: {app: api}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: admin}
spec: {selector: {app: admin}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
      - {path: /api/admin, pathType: Exact, backend: {service: {name: admin, port: {number: 80}}}}
  - host: "*.admin.example"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: admin, port: {number: 80}}}}
  - host: broken.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
"#;

#[test]
fn an_ingress_routes_by_host_and_path_to_its_services() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::ECHO), "web:1");
    let daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let ingress = daemon.ingress();
    let k = Kubectl::new(home.path());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "shop.yaml", INGRESS);
    k.ok(&["apply", "-f", &manifest]);
    k.wait_for(&["pods"], "three ready pods", |list| running(list, 3));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let get = |host: &str, path: &str| {
        let url = format!("{ingress}{path}");
        runtime.block_on(berth_tests::send(
            "GET",
            &url,
            &[("host", host)],
            Vec::new(),
        ))
    };
    // Which deployment's pod answered, from the HOSTNAME it reports.
    let answered = |host: &str, path: &str| {
        let reply = get(host, path);
        assert_eq!(reply.status, 200, "{host}{path}: {}", reply.text());
        let text = reply.text();
        let pod = text
            .lines()
            .find_map(|l| l.strip_prefix("env: HOSTNAME="))
            .unwrap_or_else(|| panic!("{host}{path}: {text}"))
            .to_owned();
        pod.split('-').next().unwrap().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("shop.example", "/").status != 200 {
        assert!(Instant::now() < deadline, "the ingress never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(answered("shop.example", "/"), "front");
    assert_eq!(answered("shop.example", "/cart/items"), "front");
    assert_eq!(answered("Shop.Example:8080", "/api/items"), "api");
    assert_eq!(answered("shop.example", "/api"), "api");
    assert_eq!(
        answered("shop.example", "/apis"),
        "front",
        "by whole path elements"
    );
    assert_eq!(
        answered("shop.example", "/api/admin"),
        "admin",
        "Exact beats Prefix"
    );
    assert_eq!(
        answered("shop.example", "/api/admin/x"),
        "api",
        "Exact is exact"
    );
    assert_eq!(answered("eu.admin.example", "/anything"), "admin");
    // Berth's own names still answer.
    assert_eq!(answered("front.localhost", "/"), "front");
    let reply = get("admin.example", "/");
    assert_eq!(
        reply.status,
        404,
        "a wildcard is one label: {}",
        reply.text()
    );
    let reply = get("broken.example", "/");
    assert_eq!(reply.status, 503);
    assert!(
        reply.text().contains("ingress default/shop")
            && reply
                .text()
                .contains("service default/missing, which does not exist"),
        "{}",
        reply.text()
    );

    // As kubectl shows it, with the address it answers on.
    let table = k.ok(&["get", "ingress"]);
    let row: Vec<&str> = table
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "shop");
    assert_eq!(row[1], "<none>");
    assert_eq!(row[2], "shop.example,*.admin.example,broken.example");
    assert_eq!(row[3], "127.0.0.1");
    let described = berth_tests::ok(berth_tests::berth(
        home.path(),
        &["describe", "ingress", "shop"],
    ));
    assert!(
        described.stdout.contains("*.admin.example") && described.stdout.contains("api:http"),
        "{}",
        described.stdout
    );
    let classes = k.ok(&["get", "ingressclass"]);
    assert!(
        classes.stdout.contains("berth.dev/ingress"),
        "{}",
        classes.stdout
    );

    // Another class's ingress is not berth's to serve.
    let nginx = write(
        dir.path(),
        "nginx.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: other}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: other.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}]}\n",
    );
    k.ok(&["apply", "-f", &nginx]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get("other.example", "/").status, 404);

    // Bad input: named, nothing stored.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n  - host: shop.example\n    http: {paths: [{path: api, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}]}\n",
    );
    let refused = k.run(&["apply", "-f", &bad]);
    assert!(
        refused.stderr.contains("spec.rules[0].http.paths[0].path"),
        "{}",
        refused.stderr
    );
    assert!(!k.run(&["get", "ingress", "bad"]).success);
}

/// A self-signed certificate for `names` made by openssl in `dir`, as
/// `NAME.crt` and `NAME.key`; the paths.
fn openssl_certificate(dir: &Path, name: &str, names: &[&str]) -> (String, String) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN={}", names[0]))
        .arg("-addext")
        .arg(format!("subjectAltName={san}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl is needed for these tests (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        crt.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// curl over HTTPS to the ingress at `address`, trusting `ca` only, as
/// `host`: its exit code, and what it printed.
fn curl_https(address: &str, host: &str, path: &str, ca: &str) -> (i32, String) {
    let port = address.rsplit_once(':').unwrap().1;
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca, "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl is needed for these tests (Debian package curl)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn an_ingress_serves_https_with_its_secret_s_certificate_and_follows_its_replacement() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::ECHO), "web:1");
    let daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let https = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(url) = daemon
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix("berth: ingress (TLS) on https://"))
            {
                break url.trim_end_matches('/').to_owned();
            }
            assert!(Instant::now() < deadline, "{}", daemon.stdout());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let k = Kubectl::new(home.path());
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = openssl_certificate(dir.path(), "first", &["shop.example"]);
    k.ok(&[
        "create", "secret", "tls", "shop-tls", "--cert", &crt, "--key", &key,
    ]);
    let manifest = write(
        dir.path(),
        "shop.yaml",
        &INGRESS.replace(
            "spec:\n  rules:\n  - host: shop.example",
            "spec:\n  tls: [{hosts: [shop.example], secretName: shop-tls}]\n  rules:\n  - host: shop.example",
        ),
    );
    k.ok(&["apply", "-f", &manifest]);
    k.wait_for(&["pods"], "three ready pods", |list| running(list, 3));

    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (code, body) = curl_https(&https, "shop.example", "/api/items", &crt);
        if code == 0 && body.contains("env: HOSTNAME=api-") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "never served over HTTPS: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The guest is told the request came over HTTPS.
    assert!(body.contains("x-forwarded-proto: https"), "{body}");

    // A new certificate in the Secret is served from then on: the old CA
    // no longer verifies it, the new one does.
    let (crt2, key2) = openssl_certificate(dir.path(), "second", &["shop.example"]);
    let replaced = k.ok(&[
        "create",
        "secret",
        "tls",
        "shop-tls",
        "--cert",
        &crt2,
        "--key",
        &key2,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let replaced = write(dir.path(), "replaced.yaml", &replaced.stdout);
    k.ok(&["apply", "-f", &replaced]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = curl_https(&https, "shop.example", "/", &crt2);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, said) = curl_https(&https, "shop.example", "/", &crt);
    assert_ne!(code, 0, "the old certificate still served: {said}");

    // A host no certificate names gets no handshake.
    let (code, said) = curl_https(&https, "eu.admin.example", "/", &crt2);
    assert_ne!(code, 0, "{said}");
}

const STATEFUL: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 3
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "web:1", volumeMounts: [{name: data, mountPath: /data}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: mb, image: "mb:1"}]
"#;

#[test]
fn a_stateful_set_gives_each_pod_its_name_and_claim_and_keeps_them_across_scaling() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::ECHO), "web:1");
    build_image(home.path(), Path::new(guests::MISBEHAVE), "mb:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let k = Kubectl::new(home.path());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "web.yaml", STATEFUL);
    k.ok(&["apply", "-f", &manifest]);
    k.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    let names = |k: &Kubectl| {
        let out = k.ok(&["get", "pods", "-l", "app=web", "-o", "json"]);
        let mut names: Vec<String> = items(&serde_json::from_str(&out.stdout).unwrap())
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&k), ["web-0", "web-1", "web-2"]);
    let described = berth_tests::ok(berth_tests::berth(
        home.path(),
        &["describe", "pvc", "data-web-1"],
    ));
    let set = berth_tests::ok(berth_tests::berth(home.path(), &["describe", "sts", "web"]));
    assert!(set.stdout.contains("3 desired | 3 total"), "{}", set.stdout);
    for line in ["Status:", "Bound", "local-path", "Used By:", "web-1"] {
        assert!(
            described.stdout.contains(line),
            "{line}: {}",
            described.stdout
        );
    }
    let table = k.ok(&["get", "sts"]);
    assert!(table.stdout.contains("3/3"), "{}", table.stdout);
    let claims = k.ok(&["get", "pvc", "-o", "name"]);
    let mut claims: Vec<&str> = claims.stdout.lines().collect();
    claims.sort();
    assert_eq!(
        claims,
        [
            "persistentvolumeclaim/data-web-0",
            "persistentvolumeclaim/data-web-1",
            "persistentvolumeclaim/data-web-2"
        ]
    );

    // Each pod writes who it is into its own claim, on its own port.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let on_pod = |name: &str, query: &str, body: &str| {
        let out = k.ok(&["get", "pod", name, "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let endpoint = pod["status"]["endpoints"]["web"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("http://{endpoint}/?{query}");
        runtime
            .block_on(berth_tests::send(
                "POST",
                &url,
                &[],
                body.as_bytes().to_vec(),
            ))
            .text()
    };
    for name in ["web-0", "web-1", "web-2"] {
        let said = on_pod(name, "write=/data/who", name);
        assert!(said.contains("write /data/who: ok"), "{said}");
    }

    // Down to one (from the top), and back: web-1 finds its own data.
    k.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    k.wait_for(
        &["pods", "-l", "app=web"],
        "web-1 and web-2 to go",
        |list| items(list).len() == 1,
    );
    assert_eq!(names(&k), ["web-0"]);
    assert_eq!(
        k.ok(&["get", "pvc", "-o", "name"]).stdout.lines().count(),
        3
    );
    k.ok(&["scale", "statefulset", "web", "--replicas=3"]);
    k.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    let said = on_pod("web-1", "read=/data/who", "");
    assert!(said.contains("read /data/who: ok: web-1"), "{said}");

    // Another guest reaches each pod by its stable name under the headless
    // service, in-process: web-1.web is web-1, however often it asks.
    k.wait_for(&["pod", "client"], "the client to be ready", |p| {
        p["status"]["phase"] == "Running"
    });
    let out = k.ok(&["get", "pod", "client", "-o", "json"]);
    let client: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let endpoint = client["status"]["endpoints"]["mb"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["web-1", "web-2", "web-1", "web-0"] {
        for url in [
            format!("http://{name}.web/?read=/data/who"),
            format!("http://{name}.web.default.svc.cluster.local/?read=/data/who"),
        ] {
            let reply = runtime.block_on(berth_tests::send(
                "GET",
                &format!("http://{endpoint}/fetch?url={url}"),
                &[],
                Vec::new(),
            ));
            assert!(
                reply
                    .text()
                    .contains(&format!("read /data/who: ok: {name}")),
                "{url}: {}",
                reply.text()
            );
        }
    }
}

#[test]
fn the_batch_example_runs_its_indexed_job_under_berth_up() {
    let home = tempfile::tempdir().unwrap();
    let batch = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/batch");
    let up = BerthRun::start_command(home.path(), &["up", batch]);
    let deadline = Instant::now() + Duration::from_secs(300);
    let kubeconfig = loop {
        if let Some(path) = up.stdout().lines().find_map(|l| {
            l.split_once("(KUBECONFIG=")
                .map(|(_, p)| p.trim_end_matches(')').to_owned())
        }) {
            break PathBuf::from(path);
        }
        assert!(Instant::now() < deadline, "{}\n{}", up.stdout(), up.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let k = Kubectl::new(kubeconfig.parent().unwrap());
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/shards",
        "--timeout=120s",
    ]);
    let out = k.ok(&["get", "job", "shards", "-o", "json"]);
    let job: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(job["status"]["completedIndexes"], "0-4", "{job:#}");
    let logs = k.ok(&["logs", "-l", "job-name=shards", "--prefix=false"]);
    for index in 0..5 {
        assert!(
            logs.stdout
                .contains(&format!("JOB_COMPLETION_INDEX={index}\n")),
            "{}",
            logs.stdout
        );
    }
    k.wait_for(&["pvc", "reports"], "the claim to be bound", |c| {
        c["status"]["phase"] == "Bound"
    });
    let table = k.ok(&["get", "cronjob", "report"]);
    let described = k.ok(&["describe", "cronjob", "report"]);
    assert!(described.stdout.contains("Forbid"), "{}", described.stdout);
    assert!(table.stdout.contains("* * * * *"), "{}", table.stdout);
}
