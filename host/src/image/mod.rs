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
pub mod unpack;

use std::path::PathBuf;

/// The local image store: an OCI layout under `$BERTH_HOME/store`.
pub fn store_dir() -> PathBuf {
    crate::home::berth_home().join("store")
}

/// Where images are materialised: `$BERTH_HOME/images/<manifest hex>`.
pub fn images_dir() -> PathBuf {
    crate::home::berth_home().join("images")
}
