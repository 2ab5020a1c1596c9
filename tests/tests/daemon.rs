//! `berth daemon` with `apply`, `get` and `delete`: declarative state that
//! is all-or-nothing and survives the daemon being killed.

use std::path::Path;

use berth_tests::{BerthRun, Finished, berth};

fn daemon(home: &Path) -> BerthRun {
    BerthRun::start_command(home, &["daemon"])
}

fn ok(out: Finished) -> Finished {
    assert!(
        out.success,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out
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

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn apply_get_and_delete_manage_declared_objects() {
    let home = tempfile::tempdir().unwrap();
    let _daemon = daemon(home.path());
    use std::os::unix::fs::PermissionsExt as _;
    let socket = home.path().join("berth.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may drive berth");

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
        assert!(listed.stdout.is_empty(), "{kind} left: {}", listed.stdout);
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
                listed.stdout.is_empty(),
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
    assert_eq!(
        before.stdout, after.stdout,
        "the same object, uid and versions"
    );

    // One daemon per data dir.
    let out = berth(home.path(), &["daemon"]);
    assert!(!out.success);
    assert!(out.stderr.contains("already serving"), "{}", out.stderr);
}
