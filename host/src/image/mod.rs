//! Images: layered wasm components and filesystem bundles, kept in the
//! content store (`berth_registry::ContentStore`).
//!
//! `build` packs a directory into layers and tags the result; `model` reads a
//! manifest back into component and bundle layers; `materialize` unpacks the
//! bundles once per image digest (through `unpack`, which is where hostile
//! archives are refused) for the runtime to mount read-only.

pub mod build;
pub mod materialize;
pub mod model;

pub use berth_unpack as unpack;

use std::path::PathBuf;

/// The local image store: an OCI layout under `$BERTH_HOME/store`.
pub fn store_dir() -> PathBuf {
    crate::home::berth_home().join("store")
}

/// Where images are materialised: `$BERTH_HOME/images/<manifest hex>`.
pub fn images_dir() -> PathBuf {
    crate::home::berth_home().join("images")
}

use berth_registry::oci::{Descriptor, MediaType};
use berth_registry::{ContentStore, Reference, StoreError};

/// The manifest or index a user's reference names in the local store.
///
/// `name@sha256:…` names content directly. Otherwise the tag is looked up as
/// `repository:tag`; when the user gave no tag, a bare `repository` entry
/// matches too, which is how umoci names what it writes into a layout.
pub fn lookup(store: &ContentStore, reference: &Reference) -> Result<Descriptor, StoreError> {
    if let Some(digest) = &reference.digest {
        let path = store.blob_path(digest)?;
        let size = std::fs::metadata(&path)
            .map_err(|_| StoreError::NotFound(reference.to_string()))?
            .len();
        let document: serde_json::Value = store.read_json(digest)?;
        let media_type = match document.get("mediaType").and_then(|m| m.as_str()) {
            Some(m) => MediaType::from(m),
            None if document.get("manifests").is_some() => MediaType::ImageIndex,
            None => MediaType::ImageManifest,
        };
        return Ok(berth_registry::descriptor(media_type, digest, size));
    }
    match store.resolve(&reference.tagged_name()) {
        Err(StoreError::NotFound(name)) if reference.tag.is_none() => store
            .resolve(&reference.repository)
            .map_err(|_| StoreError::NotFound(name)),
        other => other,
    }
}
