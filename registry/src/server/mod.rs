//! An OCI Distribution 1.1 registry: pull, push, content discovery and
//! content management over one root directory (`storage`), optionally
//! behind authentication (`auth`).

mod api;
pub mod auth;
mod error;
mod storage;
mod uploads;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use auth::Auth;
use storage::Storage;

/// Manifests larger than this are refused with 413, as they are by other
/// registries: a manifest is a small JSON document, and it is read whole.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

pub struct ServerConfig {
    pub root: PathBuf,
    pub auth: Option<Auth>,
}

pub(crate) struct AppState {
    storage: Storage,
    uploads: uploads::Uploads,
    auth: Option<Auth>,
}

/// The registry's routes over `config.root`.
pub fn router(config: ServerConfig) -> Result<Router, crate::StoreError> {
    let state = Arc::new(AppState {
        storage: Storage::open(&config.root)?,
        uploads: uploads::Uploads::default(),
        auth: config.auth,
    });
    Ok(Router::new()
        .route("/v2", get(api::base))
        .route("/v2/", get(api::base))
        .route("/token", get(api::token))
        .fallback(api::dispatch)
        .with_state(state))
}
