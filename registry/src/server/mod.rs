//! An OCI Distribution 1.1 registry: pull, push, content discovery and
//! content management over one root directory (`storage`), optionally
//! behind authentication (`auth`).

mod api;
pub mod auth;
mod error;
mod metrics;
mod storage;
mod uploads;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use auth::Auth;
pub use metrics::Metrics;
use storage::Storage;

/// Manifests larger than this are refused with 413, as they are by other
/// registries: a manifest is a small JSON document, and it is read whole.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

pub struct ServerConfig {
    pub root: PathBuf,
    pub auth: Option<Auth>,
    /// Where requests and bytes are counted.
    pub metrics: Arc<Metrics>,
}

pub(crate) struct AppState {
    storage: Storage,
    uploads: uploads::Uploads,
    auth: Option<Auth>,
    metrics: Arc<Metrics>,
}

/// An upload nothing was written to for this long is swept: a push that
/// failed or was abandoned leaves no data behind for ever.
pub const STALE_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The registry's routes over `config.root`. Stale uploads are swept now
/// and, within a Tokio runtime, every hour.
pub fn router(config: ServerConfig) -> Result<Router, crate::StoreError> {
    let state = Arc::new(AppState {
        storage: Storage::open(&config.root)?,
        uploads: uploads::Uploads::default(),
        auth: config.auth,
        metrics: config.metrics,
    });
    sweep(&state);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&state);
        runtime.spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            hourly.tick().await;
            loop {
                hourly.tick().await;
                let Some(state) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || sweep(&state)).await;
            }
        });
    }
    Ok(Router::new()
        .route("/v2", get(api::base))
        .route("/v2/", get(api::base))
        .route("/token", get(api::token))
        .fallback(api::dispatch)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .with_state(state))
}

async fn count_request(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.request(&method, response.status());
    response
}

fn sweep(state: &AppState) {
    match state.storage.sweep_uploads(STALE_UPLOAD_AGE) {
        Ok(swept) if swept.is_empty() => {}
        Ok(swept) => {
            // Their sessions (and running hashes) go with them.
            for id in &swept {
                state.uploads.forget(id);
            }
            tracing::info!("swept {} uploads untouched for a day", swept.len());
        }
        Err(e) => tracing::warn!("sweeping stale uploads: {e}"),
    }
}
