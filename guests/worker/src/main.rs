//! An HTTP service with a worker beside it, in one component. Its `run`
//! ticks into a file of a granted directory; its handler answers with what
//! the file says, so a test sees both worlds run and share what they may.
//!
//! `worker TICKS MS CODE`: writes `1`…`TICKS` to `$TICKS_FILE` (default
//! `/data/ticks`), one every MS milliseconds, printing each, then exits
//! with CODE. Every request is answered `ticks: N` (or `ticks: none`).

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};
use wstd::http::server::Responder;
use wstd::http::{Body, Response};

fn ticks_file() -> String {
    std::env::var("TICKS_FILE").unwrap_or_else(|_| "/data/ticks".to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize| -> u64 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: worker TICKS MS CODE");
            std::process::exit(2)
        })
    };
    let (ticks, millis, code) = (number(1), number(2), number(3));
    let file = ticks_file();
    println!("worker started");
    for tick in 1..=ticks {
        if let Err(e) = std::fs::write(&file, tick.to_string()) {
            eprintln!("{file}: {e}");
            std::process::exit(1);
        }
        println!("tick {tick}");
        std::thread::sleep(std::time::Duration::from_millis(millis));
    }
    eprintln!("worker leaving with {code}");
    std::process::exit(code as i32);
}

struct Handler;

impl Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        drop(request);
        let answer = match std::fs::read_to_string(ticks_file()) {
            Ok(text) => format!("ticks: {}\n", text.trim()),
            Err(_) => "ticks: none\n".to_owned(),
        };
        let responder = Responder::new(response_out);
        wstd::runtime::block_on(async move {
            // The client may have gone; nothing to tell anyone then.
            let _ = responder.respond(Response::new(Body::from(answer))).await;
        });
    }
}

wasip2::http::proxy::export!(Handler with_types_in wasip2);
