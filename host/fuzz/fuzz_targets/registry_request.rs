//! The registry's HTTP surface: any method, path, query, headers and body
//! reaches the router of a real `berth registry serve` over a temporary
//! root. It must answer (never panic), and never with a 500 for what is
//! the client's mistake.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _root: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = tempfile::tempdir().expect("a temporary root");
        let router = berth_registry::server::router(berth_registry::server::ServerConfig {
            root: root.path().to_owned(),
            auth: None,
            metrics: Default::default(),
        })
        .expect("the registry over an empty root");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Server {
            runtime,
            router,
            _root: root,
        }
    })
}

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"];
const HEADERS: [&str; 4] = ["content-type", "content-range", "range", "accept"];

fuzz_target!(|input: (u8, &str, Vec<(u8, &str)>, &[u8])| {
    let (method, target, headers, body) = input;
    let mut request = http::Request::builder()
        .method(METHODS[usize::from(method) % METHODS.len()])
        .uri(format!("/{}", target.trim_start_matches('/')));
    for (name, value) in headers {
        request = request.header(HEADERS[usize::from(name) % HEADERS.len()], value);
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else {
        return;
    };
    let server = server();
    let mut router = server.router.clone();
    let response = server
        .runtime
        .block_on(tower_service::Service::call(&mut router, request))
        .expect("the router is infallible");
    assert!(
        response.status() != http::StatusCode::INTERNAL_SERVER_ERROR,
        "a 500 for a client's request"
    );
});
