//! The API service of examples/shop: the catalogue, with live stock levels.
//!
//! `GET /products` asks the stock service (`http://stock/stock`; berth sends
//! a request for a bare service name to that service in the same namespace)
//! and answers the fixed [`CATALOGUE`] merged with those counts, plus
//! `served_by`, this pod's name (`HOSTNAME`), so a client can watch requests
//! spread over the replicas:
//!
//! ```json
//! {"products": [{"name": "teapot", "price": 24.0, "stock": 12}, …],
//!  "served_by": "api-6d5f…-x7k2p"}
//! ```
//!
//! When the stock service cannot be asked, the answer is 502 with a JSON
//! error naming the call that failed; the details go to the pod's log.
//! `GET /healthz` answers `ok` without asking stock, so one slow dependency
//! does not take every api replica out of its service.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};
use wstd::http::{Body, Client, Error, HeaderValue, Method, Request, Response, StatusCode};
use wstd::time::Duration;

const CONTENT_TYPE: &str = "content-type";

/// What is on sale: (name, price in euros). Stock levels come from the
/// stock service, keyed by the same names.
const CATALOGUE: [(&str, f64); 3] = [("teapot", 24.0), ("mug", 8.5), ("kettle", 39.9)];

const STOCK_URL: &str = "http://stock/stock";

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/products") => products().await,
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (_, "/products" | "/healthz") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        _ => error(StatusCode::NOT_FOUND, "no such path"),
    };
    Ok(response)
}

async fn products() -> Response<Body> {
    let stock = match fetch_stock().await {
        Ok(stock) => stock,
        Err(failure) => {
            match failure.detail() {
                Some(detail) => eprintln!("GET {STOCK_URL}: {failure}: {detail}"),
                None => eprintln!("GET {STOCK_URL}: {failure}"),
            }
            return reply(
                StatusCode::BAD_GATEWAY,
                "application/json",
                json!({ "error": format!("GET {STOCK_URL} failed: {failure}") }).to_string(),
            );
        }
    };
    let products: Vec<Value> = CATALOGUE
        .iter()
        .map(|(name, price)| {
            // An item the stock service does not list is unknown (null),
            // which is not the same as sold out (0).
            json!({ "name": name, "price": price, "stock": stock.get(*name) })
        })
        .collect();
    let served_by = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".to_owned());
    reply(
        StatusCode::OK,
        "application/json",
        json!({ "products": products, "served_by": served_by }).to_string(),
    )
}

/// Why the stock levels could not be had. `Display` is what the client
/// sees; [`StockFailure::detail`] (the underlying error) goes to the log only.
enum StockFailure {
    Unreachable(Error),
    Status(StatusCode),
    NotCounts(serde_json::Error),
}

impl StockFailure {
    /// The underlying error, for the log.
    fn detail(&self) -> Option<String> {
        match self {
            StockFailure::Unreachable(e) => Some(format!("{e:#}")),
            StockFailure::Status(_) => None,
            StockFailure::NotCounts(e) => Some(e.to_string()),
        }
    }
}

impl fmt::Display for StockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StockFailure::Unreachable(_) => write!(f, "the stock service did not answer"),
            StockFailure::Status(status) => write!(f, "the stock service answered {status}"),
            StockFailure::NotCounts(_) => {
                write!(
                    f,
                    "the stock service's answer is not a JSON object of counts"
                )
            }
        }
    }
}

async fn fetch_stock() -> Result<BTreeMap<String, u64>, StockFailure> {
    let request = Request::get(STOCK_URL)
        .body(Body::empty())
        .expect("STOCK_URL is a valid URI");
    // The wasi:http defaults wait minutes; a stuck stock service should
    // turn into a 502 while the user is still looking at the page.
    let mut client = Client::new();
    client.set_connect_timeout(Duration::from_secs(2));
    client.set_first_byte_timeout(Duration::from_secs(5));
    let response = client
        .send(request)
        .await
        .map_err(StockFailure::Unreachable)?;
    if !response.status().is_success() {
        return Err(StockFailure::Status(response.status()));
    }
    let mut body = response.into_body();
    let bytes = body.contents().await.map_err(StockFailure::Unreachable)?;
    serde_json::from_slice(bytes).map_err(StockFailure::NotCounts)
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    reply(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
