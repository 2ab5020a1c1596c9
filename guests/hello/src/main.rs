//! The smallest useful wasi:http service: answers `hello from <path>`.
//! Runs unchanged under `berth run` and `wasmtime serve`.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    Ok(Response::new(
        format!("hello from {}\n", request.uri().path()).into(),
    ))
}
