//! Pods as Kubernetes means them: containers that share the pod's network.

use std::path::Path;

use berth_tests::kube::{apply, build_image, wait_ready};
use berth_tests::{BerthRun, get};

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
