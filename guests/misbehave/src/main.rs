//! A guest that breaks the rules on request, to prove the host contains it.
//!
//! `/trap` panics, `/loop` spins forever, `/alloc?mb=N` allocates and touches N
//! MiB, `/stack` recurses without bound, `/burn?ms=N` keeps a core busy for N ms,
//! `/sleep?ms=N` sleeps, `/naps?n=N&ms=M`
//! sleeps N times, `/fetch?url=U`
//! makes an outbound HTTP request and reports the outcome, `/connect?addr=A`
//! tries a raw TCP connection, `/state` reports whether memory written by an
//! earlier request is visible (it must not be). `/whoami` answers the pod
//! name and `$VERSION`, after `$DELAY_MS`, or traps when `$FAIL` is set;
//! `/exists?path=P` is 200 if P exists, else 503. Anything else
//! answers `ok`, so tests can check the host still serves after each failure.

use std::sync::atomic::{AtomicU64, Ordering};
use wstd::http::{Body, Client, Error, Request, Response, StatusCode};
use wstd::time::Duration;

/// Lives in linear memory (.bss); written by `/state`.
static STATE: AtomicU64 = AtomicU64::new(0);

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let query = request.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    match request.uri().path() {
        "/trap" => panic!("guest asked to trap"),
        "/whoami" => {
            // Replicas told apart by their pod name; a replica is made slow
            // (DELAY_MS) or broken (FAIL) through its env.
            if std::env::var_os("FAIL").is_some() {
                panic!("this replica fails every request");
            }
            if let Some(ms) = std::env::var("DELAY_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                wstd::task::sleep(Duration::from_millis(ms)).await;
            }
            let name = std::env::var("HOSTNAME").unwrap_or_default();
            let version = std::env::var("VERSION").unwrap_or_default();
            Ok(Response::new(format!("{name} {version}\n").into()))
        }
        "/exists" => {
            // Ready when a file exists: a readiness probe a test can flip.
            let path = param("path").unwrap_or_default();
            if std::path::Path::new(&path).exists() {
                Ok(Response::new(format!("{path} exists\n").into()))
            } else {
                Ok(status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{path} is missing\n"),
                ))
            }
        }
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                // black_box keeps the optimiser from proving the loop useless.
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/alloc" => {
            let mb: usize = param("mb").and_then(|v| v.parse().ok()).unwrap_or(1);
            let mut blocks = Vec::new();
            for _ in 0..mb {
                // Touch every page so the memory is really committed.
                blocks.push(vec![1u8; 1 << 20]);
            }
            let total: usize = blocks.iter().map(|b| b.len()).sum();
            Ok(Response::new(
                format!("allocated {} MiB\n", total >> 20).into(),
            ))
        }
        "/stack" => Ok(Response::new(format!("depth {}\n", recurse(0)).into())),
        "/burn" => {
            // Busy for MS milliseconds of wall time: CPU load on demand.
            let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(10);
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            let mut spins = 0u64;
            while std::time::Instant::now() < until {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
            Ok(Response::new(format!("burned {ms} ms\n").into()))
        }
        "/sleep" => {
            let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
            wstd::task::sleep(Duration::from_millis(ms)).await;
            Ok(Response::new(format!("slept {ms} ms\n").into()))
        }
        "/naps" => {
            // Mostly waiting: many short sleeps, almost no CPU.
            let n: u32 = param("n").and_then(|v| v.parse().ok()).unwrap_or(10);
            let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(10);
            for _ in 0..n {
                wstd::task::sleep(Duration::from_millis(ms)).await;
            }
            Ok(Response::new(format!("napped {n} times\n").into()))
        }
        "/fetch" => {
            let Some(url) = param("url") else {
                return Ok(status(StatusCode::BAD_REQUEST, "missing ?url=\n".into()));
            };
            let outbound = Request::get(url.as_str()).body(Body::empty())?;
            match Client::new().send(outbound).await {
                Ok(response) => {
                    let code = response.status();
                    let mut body = response.into_body();
                    let text = body
                        .str_contents()
                        .await
                        .unwrap_or("<unreadable>")
                        .to_owned();
                    Ok(Response::new(
                        format!("fetched {url}: {code}: {text}").into(),
                    ))
                }
                Err(e) => Ok(status(
                    StatusCode::BAD_GATEWAY,
                    format!("fetch {url} failed: {e:?}\n"),
                )),
            }
        }
        "/connect" => {
            // A raw socket, bypassing wasi:http: the host grants none.
            let addr = param("addr").unwrap_or_default();
            let outcome = match addr.parse::<std::net::SocketAddr>() {
                Ok(sockaddr) => match wstd::net::TcpStream::connect_addr(sockaddr).await {
                    Ok(_) => "connected".to_owned(),
                    Err(e) => format!("error: {e}"),
                },
                Err(e) => format!("bad address: {e}"),
            };
            Ok(Response::new(format!("connect {addr}: {outcome}\n").into()))
        }
        "/state" => {
            // Every request should get a fresh instance: memory left by an
            // earlier request must never be visible to this one.
            let seen = STATE.swap(0x5eed, Ordering::SeqCst);
            let verdict = if seen == 0 {
                "clean".to_owned()
            } else {
                format!("dirty: {seen:#x}")
            };
            Ok(Response::new(format!("{verdict}\n").into()))
        }
        _ => Ok(Response::new("ok\n".to_owned().into())),
    }
}

fn status(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = code;
    response
}

/// Recurses through wasm frames only (no shadow-stack data), so the engine's
/// own stack limit is what stops it.
#[inline(never)]
#[expect(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    1 + recurse(std::hint::black_box(depth + 1))
}
