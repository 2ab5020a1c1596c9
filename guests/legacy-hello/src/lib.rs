//! A hello service written against wasi:http@0.2.0 with the raw `wasi` crate
//! bindings (no wstd), to prove berth serves older 0.2.x guests unchanged.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("a fresh response has a body");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("the body stream opens once");
        let text = format!("hello from {path} over wasi:http@0.2.0\n");
        out.blocking_write_and_flush(text.as_bytes())
            .expect("writing a short body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}
