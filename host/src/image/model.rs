//! What an image is to berth: an OCI manifest whose layers are wasm
//! components (`application/wasm`) and filesystem bundles (tar layers, plain
//! or compressed), each bundle carrying the path it is mounted at.

use berth_registry::oci::{Descriptor, ImageManifest, MediaType};
use berth_registry::{ContentStore, StoreError};

/// The config media type of CNCF wasm OCI artifacts.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// A component layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The annotation on a bundle layer naming where it is mounted in the guest.
pub const MOUNT_ANNOTATION: &str = "dev.berth.mount";

/// How a bundle layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
pub enum Layer {
    Component(Descriptor),
    Bundle {
        descriptor: Descriptor,
        compression: Compression,
        mount: String,
    },
}

/// A manifest read from the store and sorted into its parts.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub layers: Vec<Layer>,
}

impl Image {
    pub fn load(store: &ContentStore, manifest_digest: &str) -> Result<Image, ImageError> {
        let manifest: ImageManifest = store.read_json(manifest_digest)?;
        let mut layers = Vec::new();
        for d in manifest.layers() {
            layers.push(classify(d).map_err(|reason| ImageError::Layer {
                digest: d.digest().to_string(),
                reason,
            })?);
        }
        Ok(Image {
            manifest_digest: manifest_digest.to_owned(),
            manifest,
            layers,
        })
    }

    /// The component that runs: the topmost component layer.
    pub fn entrypoint(&self) -> Option<&Descriptor> {
        self.layers.iter().rev().find_map(|l| match l {
            Layer::Component(d) => Some(d),
            Layer::Bundle { .. } => None,
        })
    }
}

fn classify(d: &Descriptor) -> Result<Layer, String> {
    let media_type = d.media_type().to_string();
    if media_type == WASM_LAYER {
        return Ok(Layer::Component(d.clone()));
    }
    let compression = match d.media_type() {
        MediaType::ImageLayer => Compression::None,
        MediaType::ImageLayerGzip => Compression::Gzip,
        MediaType::ImageLayerZstd => Compression::Zstd,
        _ => return Err(format!("unsupported layer media type {media_type}")),
    };
    let mount = d
        .annotations()
        .as_ref()
        .and_then(|a| a.get(MOUNT_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| "/".to_owned());
    if !mount.starts_with('/') || mount.split('/').any(|c| c == "..") {
        return Err(format!(
            "mount path {mount:?} must be absolute, without `..`"
        ));
    }
    Ok(Layer::Bundle {
        descriptor: d.clone(),
        compression,
        mount,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {digest}: {reason}")]
    Layer { digest: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}
