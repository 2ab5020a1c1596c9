//! `native-hello ADDR`: answers `hello from <path>`, as guests/hello does,
//! so both do the same HTTP work and only what runs the handler differs.

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let app = axum::Router::new()
        .fallback(|uri: axum::http::Uri| async move { format!("hello from {}\n", uri.path()) });
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    axum::serve(listener, app).await.unwrap();
}
