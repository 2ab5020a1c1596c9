//! Reports what the guest can see, so tests can prove what a sandbox grants.
//!
//! Every request gets a plain-text report: method, path, headers, body and the
//! environment. Query parameters ask for filesystem operations, whose outcome
//! (content or error) is reported rather than turned into a failure:
//! `?read=PATH`, `?list=DIR`, `?write=PATH` (the request body is written),
//! `?tcp=HOST:PORT[&lines=N]` (the request body is sent over a TCP
//! connection, and N lines of the reply reported).

use std::fmt::Write as _;
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (parts, mut body) = request.into_parts();
    let body = body.contents().await?.to_vec();

    let mut out = String::new();
    writeln!(out, "method: {}", parts.method).unwrap();
    writeln!(out, "path: {}", parts.uri.path()).unwrap();
    for (name, value) in &parts.headers {
        writeln!(
            out,
            "header: {name}: {}",
            value.to_str().unwrap_or("<binary>")
        )
        .unwrap();
    }
    writeln!(out, "body: {}", String::from_utf8_lossy(&body)).unwrap();
    let mut env: Vec<_> = std::env::vars().collect();
    env.sort();
    for (k, v) in env {
        writeln!(out, "env: {k}={v}").unwrap();
    }

    for (op, arg) in query_pairs(parts.uri.query().unwrap_or("")) {
        match op.as_str() {
            "read" => match std::fs::read_to_string(&arg) {
                Ok(content) => writeln!(out, "read {arg}: ok: {content}").unwrap(),
                Err(e) => writeln!(out, "read {arg}: error: {e}").unwrap(),
            },
            "list" => match std::fs::read_dir(&arg) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    writeln!(out, "list {arg}: ok: {}", names.join(",")).unwrap();
                }
                Err(e) => writeln!(out, "list {arg}: error: {e}").unwrap(),
            },
            "write" => match std::fs::write(&arg, &body) {
                Ok(()) => writeln!(out, "write {arg}: ok").unwrap(),
                Err(e) => writeln!(out, "write {arg}: error: {e}").unwrap(),
            },
            "tcp" => {
                let lines = query_pairs(parts.uri.query().unwrap_or(""))
                    .iter()
                    .find(|(k, _)| k == "lines")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(1);
                match tcp(&arg, &body, lines) {
                    Ok(reply) => writeln!(out, "tcp {arg}: ok: {reply:?}").unwrap(),
                    Err(e) => writeln!(out, "tcp {arg}: error: {e}").unwrap(),
                }
            }
            _ => {}
        }
    }
    Ok(Response::new(out.into()))
}

/// Connects to `address` (wasi:sockets: `HOST:PORT`, the name looked up
/// by the host), sends `data`, and reads until `lines` CRLF-ended lines
/// came back or the peer closed.
fn tcp(address: &str, data: &[u8], lines: usize) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.write_all(data)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.windows(2).filter(|w| w == b"\r\n").count() < lines {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Splits `a=b&c=d`, undoing percent-encoding so paths like `../x` survive.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
