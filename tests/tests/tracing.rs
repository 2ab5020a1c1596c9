//! Traces: a request through the shop example (front → api → stock, each
//! a wasm service calling the next by name) is one W3C trace, its spans
//! exported over OTLP/HTTP to a real receiver built on OpenTelemetry's own
//! protobuf types, each linked to its parent.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{BerthRun, send};

/// tests/otlp_receiver.py, on a free port, writing spans to `spans`.
struct Receiver {
    child: std::process::Child,
    url: String,
}

impl Receiver {
    fn start(spans: &Path) -> Receiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("../target/test-venv/bin/python");
        let mut child = Command::new(&python)
            .arg(root.join("otlp_receiver.py"))
            .arg(spans)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (tests/prepare.sh makes the venv with opentelemetry-proto)",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the receiver said {line:?}"))
            .to_owned();
        Receiver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spans_of(file: &Path, trace: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|s| s["trace_id"] == trace)
        .collect()
}

#[tokio::test]
async fn a_request_through_the_shop_is_one_trace_of_linked_spans_at_an_otlp_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans.jsonl");
    let receiver = Receiver::start(&spans);
    let home = tempfile::tempdir().unwrap();
    let shop = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop");
    let up = BerthRun::start_command(home.path(), &["up", shop, "--otlp-endpoint", &receiver.url]);
    let ingress = up.ingress();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !up.stdout().contains("berth up: 5 pods ready") {
        assert!(Instant::now() < deadline, "{}\n{}", up.stdout(), up.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The client's own span: berth's are its descendants.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let reply = send(
        "GET",
        &format!("{ingress}/api/products"),
        &[
            ("host", "front.localhost"),
            ("traceparent", &format!("00-{trace}-{client_span}-01")),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The exporter sends in batches (every few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = spans_of(&spans, trace);
        if found.len() >= 9 {
            break found;
        }
        assert!(Instant::now() < deadline, "spans so far: {found:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let only = |what: &dyn Fn(&serde_json::Value) -> bool, called: &str| {
        let matching: Vec<_> = found.iter().filter(|s| what(s)).collect();
        assert_eq!(matching.len(), 1, "one span {called}: {found:#?}");
        matching[0].clone()
    };
    let named = |name: &str| only(&|s| s["name"] == name, name);
    let child_of = |parent: &serde_json::Value, kind: u64, called: &str| {
        only(
            &|s| s["parent_span_id"] == parent["span_id"] && s["kind"] == kind,
            called,
        )
    };
    // OTLP's SpanKind: 1 internal, 2 server, 3 client.
    let (internal, server, client) = (1, 2, 3);
    let ingress_span = named("ingress default/front");
    assert_eq!(ingress_span["parent_span_id"], client_span, "{found:#?}");
    // Each Service: the router's span, the guest's call under it, and the
    // guest's request to the next Service under that, which the next
    // Service's span is a child of.
    let front = named("route default/front");
    assert_eq!(front["parent_span_id"], ingress_span["span_id"]);
    let front_guest = child_of(&front, internal, "of front's guest");
    let to_api = child_of(&front_guest, client, "of front's call to api");
    assert_eq!(to_api["name"], "GET api", "{found:#?}");
    let api = named("route default/api");
    assert_eq!(api["parent_span_id"], to_api["span_id"], "{found:#?}");
    let api_guest = child_of(&api, internal, "of api's guest");
    let to_stock = child_of(&api_guest, client, "of api's call to stock");
    assert_eq!(to_stock["name"], "GET stock", "{found:#?}");
    let stock = named("route default/stock");
    assert_eq!(stock["parent_span_id"], to_stock["span_id"], "{found:#?}");
    let stock_guest = child_of(&stock, internal, "of stock's guest");
    assert!(
        stock_guest["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("guest ") && n.contains("stock")),
        "{found:#?}"
    );
    assert_eq!(found.len(), 9, "{found:#?}");
    assert!(found.iter().all(|s| s["service"] == "berth"), "{found:#?}");
    for span in [&ingress_span, &front, &api, &stock] {
        assert_eq!(span["kind"], server, "{span}");
    }
    // None failed.
    assert!(found.iter().all(|s| s["status"] != 2), "{found:#?}");
}
