//! The web dashboard: what runs on the host at a glance, live, with the
//! actions people take most, charts of the last hour, and log tails.
//!
//! Served at `http://dashboard.localhost:PORT/` on the ingress (browsers
//! treat localhost as a secure context) and under `/ui/` on the API port
//! for remote use. The page is a small bundle built from `dashboard-ui/`
//! (committed, embedded here: `cargo build` needs no node). Everything it
//! shows and does goes through the Kubernetes API, forwarded under `k8s/`
//! with the admin's rights, the session standing for the token; beside it
//! `dash/` answers what the API has no object for: the history charts are
//! drawn from ([`history`]) and the local image store.
//!
//! Nothing is served without a session ([`sessions`]): `berth dashboard`
//! mints a one-time sign-in link with the admin token, the link sets an
//! HttpOnly, SameSite=Strict cookie. Requests that read or change state
//! must also carry the dashboard's own header, which a page of another
//! origin cannot send without a CORS preflight berth never grants: with
//! the strict cookie, that keeps other sites from acting with the session.

mod feed;
pub mod history;
mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::BodyExt as _;

use crate::runtime::{Body, BoxFuture};
pub use history::History;
use sessions::Sessions;

const INDEX: &[u8] = include_bytes!("../../dashboard-ui/dist/index.html");
const SCRIPT: &[u8] = include_bytes!("../../dashboard-ui/dist/app.js");
const STYLE: &[u8] = include_bytes!("../../dashboard-ui/dist/app.css");

/// The host name the ingress serves the dashboard on.
pub const HOST: &str = "dashboard.localhost";
const COOKIE: &str = "berth_session";
/// The header every call of the page's carries (see the module's doc).
const OWN_HEADER: &str = "x-berth-dashboard";

pub struct Dashboard {
    /// The Kubernetes API, unauthenticated: the session is the check.
    kube: Router,
    sessions: Sessions,
    history: Arc<History>,
    /// Where the ingress and the API listen, for the links it gives.
    ingress: SocketAddr,
    api: SocketAddr,
    /// Ends the long answers (the feed) when the daemon stops.
    shutdown: tokio_util::sync::CancellationToken,
}

impl Dashboard {
    pub fn new(
        kube: Router,
        history: Arc<History>,
        ingress: SocketAddr,
        api: SocketAddr,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Arc<Dashboard> {
        Arc::new(Dashboard {
            kube,
            sessions: Sessions::default(),
            history,
            ingress,
            api,
            shutdown,
        })
    }

    /// The dashboard's own routes: at `/` on its host, nested under `/ui`
    /// on the API port.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/app.js", get(script))
            .route("/app.css", get(style))
            .route("/login", get(login))
            .route("/logout", post(logout))
            .route("/k8s/{*rest}", any(kubernetes))
            .route("/dash/feed", get(feed))
            .route("/dash/info", get(info))
            .route("/dash/series", get(series))
            .route("/dash/images", get(images))
            .with_state(self.clone())
    }

    /// The dashboard under `/ui/` (for the API port), `/ui` sent there.
    pub fn under_ui(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/ui",
                get(|| async { axum::response::Redirect::permanent("/ui/") }),
            )
            .nest("/ui/", self.router())
    }

    /// What only the admin token may do: mint a sign-in link (merged into
    /// the API, behind its authentication).
    pub fn admin_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/berth/dashboard/login", post(mint))
            .with_state(self.clone())
    }

    /// How the ingress serves [`HOST`]: the dashboard's routes, made once.
    pub fn for_ingress(self: &Arc<Self>) -> crate::router::OwnHost {
        let router = self.router();
        Arc::new(move |request| serve(router.clone(), request))
    }

    /// The session a request carries, if it is one.
    fn session(&self, headers: &HeaderMap) -> Option<String> {
        let cookies = headers.get_all(header::COOKIE);
        let session = cookies
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned())?;
        self.sessions.valid(&session).then_some(session)
    }

    /// A request the page makes: signed in, and from the page itself.
    fn check(&self, headers: &HeaderMap) -> Result<String, Refused> {
        let session = self.session(headers).ok_or(Refused::SignedOut)?;
        if headers.get(OWN_HEADER).is_none() {
            return Err(Refused::NotThePage);
        }
        Ok(session)
    }
}

/// Serves one request for [`HOST`] from the ingress with `router`.
fn serve(
    mut router: Router,
    request: http::Request<hyper::body::Incoming>,
) -> BoxFuture<'static, http::Response<Body>> {
    Box::pin(async move {
        let request = request.map(AxumBody::new);
        let response = match tower_service::Service::call(&mut router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        response.map(|body| body.map_err(Into::into).boxed_unsync())
    })
}

/// Why a call of the page's was refused.
enum Refused {
    SignedOut,
    /// Without the dashboard's header: not made by its page.
    NotThePage,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignedOut => signed_out(),
            Refused::NotThePage => (
                StatusCode::FORBIDDEN,
                "the dashboard's own pages make this request\n",
            )
                .into_response(),
        }
    }
}

fn signed_out() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>berth</title><p>Not signed in. Run <code>berth dashboard</code> \
         for a sign-in link.</p>\n",
    )
        .into_response();
    secure(response.headers_mut());
    response
}

/// What every page of the dashboard is served with: no framing (no
/// clickjacking), no scripts but its own, no referrer carrying a link.
fn secure(headers: &mut HeaderMap) {
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// One of the page's files, and its gzip once a browser asked for it: the
/// script is most of the page, and a remote browser on `/ui/` gets it in
/// 30 KiB instead of 72.
struct Asset {
    kind: &'static str,
    bytes: &'static [u8],
    gzipped: std::sync::OnceLock<Vec<u8>>,
}

impl Asset {
    const fn new(kind: &'static str, bytes: &'static [u8]) -> Asset {
        Asset {
            kind,
            bytes,
            gzipped: std::sync::OnceLock::new(),
        }
    }

    fn gzipped(&self) -> &[u8] {
        self.gzipped.get_or_init(|| {
            use std::io::Write as _;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(self.bytes);
            encoder.finish().unwrap_or_default()
        })
    }
}

static INDEX_ASSET: Asset = Asset::new("text/html; charset=utf-8", INDEX);
static SCRIPT_ASSET: Asset = Asset::new("text/javascript; charset=utf-8", SCRIPT);
static STYLE_ASSET: Asset = Asset::new("text/css; charset=utf-8", STYLE);

/// Whether the request's Accept-Encoding takes gzip: named with a weight
/// above 0, or not named and `*` taken (RFC 9110 12.5.3).
fn takes_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let weight = parts
            .find_map(|p| {
                let (key, value) = p.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| value.trim().parse::<f32>().ok())?
            })
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(weight);
        } else if name == "*" {
            any = Some(weight);
        }
    }
    gzip.or(any).is_some_and(|weight| weight > 0.0)
}

fn asset(dashboard: &Dashboard, headers: &HeaderMap, asset: &'static Asset) -> Response {
    if dashboard.session(headers).is_none() {
        return signed_out();
    }
    let mut response = if takes_gzip(headers) {
        (
            [
                (header::CONTENT_TYPE, asset.kind),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            asset.gzipped(),
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.kind)], asset.bytes).into_response()
    };
    // Caches keep the two apart.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    secure(response.headers_mut());
    response
}

async fn index(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    asset(&d, &headers, &INDEX_ASSET)
}

async fn script(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    asset(&d, &headers, &SCRIPT_ASSET)
}

async fn style(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    asset(&d, &headers, &STYLE_ASSET)
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    code: String,
}

/// A sign-in link: its code for a session cookie, then the page (`./`, so
/// under `/ui/` it stays there).
async fn login(State(d): State<Arc<Dashboard>>, Query(query): Query<LoginQuery>) -> Response {
    let Some(session) = d.sessions.redeem(&query.code) else {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>berth</title><p>This sign-in link was used already or has \
             expired. Run <code>berth dashboard</code> for a new one.</p>\n",
        )
            .into_response();
        secure(response.headers_mut());
        return response;
    };
    let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200");
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "./"),
            (header::SET_COOKIE, cookie.as_str()),
        ],
    )
        .into_response();
    secure(response.headers_mut());
    response
}

async fn logout(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    match d.check(&headers) {
        Ok(session) => {
            d.sessions.end(&session);
            let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
            (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

/// The Kubernetes API, as the admin: `k8s/api/v1/pods` is `/api/v1/pods`.
async fn kubernetes(State(d): State<Arc<Dashboard>>, request: Request) -> Response {
    if let Err(refused) = d.check(request.headers()) {
        return refused.into_response();
    }
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix("/k8s").unwrap_or("/");
    let uri = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    parts.uri = match uri.parse() {
        Ok(uri) => uri,
        Err(_) => return (StatusCode::BAD_REQUEST, "not a path\n").into_response(),
    };
    // The API sees the admin, not the browser's cookie.
    parts.headers.remove(header::COOKIE);
    let mut kube = d.kube.clone();
    match tower_service::Service::call(&mut kube, Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[derive(serde::Deserialize)]
struct FeedQuery {
    /// Comma-separated, of [`feed::RESOURCES`].
    resources: String,
}

/// Every list the page shows, listed and watched over one response.
async fn feed(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Response {
    if let Err(refused) = d.check(&headers) {
        return refused.into_response();
    }
    let mut wanted = Vec::new();
    for name in query.resources.split(',').filter(|n| !n.is_empty()) {
        match feed::RESOURCES.iter().find(|(known, _)| *known == name) {
            Some((known, _)) => wanted.push(*known),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("the dashboard's feed has no resource {name:?}\n"),
                )
                    .into_response();
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        feed::feed(&d.kube, wanted, &d.shutdown),
    )
        .into_response()
}

#[derive(serde::Serialize)]
struct Info {
    ingress: String,
}

async fn info(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Err(refused) = d.check(&headers) {
        return refused.into_response();
    }
    axum::Json(Info {
        ingress: d.ingress.to_string(),
    })
    .into_response()
}

#[derive(serde::Deserialize)]
struct SeriesQuery {
    service: Option<String>,
    pod: Option<String>,
}

/// A service's traffic or a pod's use over the last hour (`ns/name`);
/// empty until berth has sampled it twice.
async fn series(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(query): Query<SeriesQuery>,
) -> Response {
    if let Err(refused) = d.check(&headers) {
        return refused.into_response();
    }
    match (query.service, query.pod) {
        (Some(service), None) => {
            axum::Json(d.history.service(&service).unwrap_or_default()).into_response()
        }
        (None, Some(pod)) => axum::Json(d.history.pod(&pod).unwrap_or_default()).into_response(),
        _ => (
            StatusCode::BAD_REQUEST,
            "ask for one of service=NS/NAME or pod=NS/NAME\n",
        )
            .into_response(),
    }
}

#[derive(serde::Serialize)]
struct ImageRow {
    name: String,
    digest: String,
    size: u64,
    layers: usize,
}

/// The local image store: names, sizes and layers.
async fn images(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Err(refused) = d.check(&headers) {
        return refused.into_response();
    }
    let listed = tokio::task::spawn_blocking(|| {
        use crate::image::model::Image;
        let store = berth_registry::ContentStore::open(crate::image::store_dir())?;
        let mut rows = Vec::new();
        for (name, descriptor) in store.tags()? {
            let (size, layers) = match Image::resolve(&store, &descriptor) {
                Ok(image) => (
                    image.manifest.layers().iter().map(|l| l.size()).sum(),
                    image.manifest.layers().len(),
                ),
                Err(_) => (0, 0),
            };
            rows.push(ImageRow {
                name,
                digest: descriptor.digest().to_string(),
                size,
                layers,
            });
        }
        Ok::<_, anyhow::Error>(rows)
    })
    .await;
    match listed {
        Ok(Ok(rows)) => axum::Json(rows).into_response(),
        Ok(Err(e)) => {
            tracing::warn!("the dashboard listing images: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the image store could not be read\n",
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(serde::Serialize)]
struct SignIn {
    /// On the ingress: for a browser on this host.
    url: String,
    /// On the API port, over HTTPS with berth's CA: for a remote browser.
    remote: String,
}

/// A one-time sign-in link, for `berth dashboard`.
async fn mint(State(d): State<Arc<Dashboard>>) -> Response {
    match d.sessions.mint() {
        Ok(code) => axum::Json(SignIn {
            url: format!("http://{HOST}:{}/login?code={code}", d.ingress.port()),
            remote: format!("https://{}/ui/login?code={code}", d.api),
        })
        .into_response(),
        Err(e) => {
            tracing::error!("minting a dashboard sign-in: no randomness: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn assets_are_gzipped_for_browsers_that_take_it() {
        assert!(takes_gzip(&accepting("gzip, deflate, br, zstd")));
        assert!(takes_gzip(&accepting("br;q=1.0, GZIP;q=0.5")));
        assert!(takes_gzip(&accepting("*")));
        assert!(!takes_gzip(&accepting("gzip;q=0, br")));
        assert!(!takes_gzip(&accepting("gzip;Q=0, *")));
        assert!(!takes_gzip(&accepting("*;q=0")));
        assert!(takes_gzip(&accepting("br, *;q=0.1")));
        assert!(!takes_gzip(&accepting("identity")));
        assert!(!takes_gzip(&HeaderMap::new()));

        let packed = SCRIPT_ASSET.gzipped();
        assert!(
            packed.len() < SCRIPT.len() / 2,
            "{} of {}",
            packed.len(),
            SCRIPT.len()
        );
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(packed), &mut unpacked)
            .unwrap();
        assert_eq!(unpacked, SCRIPT);
    }
}
