//! What an image is to berth, whichever tool made it:
//!
//! - berth's own and other CNCF wasm artifacts (wkg, wash): config
//!   `application/vnd.wasm.config.v0+json`, component layers
//!   `application/wasm`, and filesystem bundles (tar layers, plain or
//!   compressed) each carrying the path it is mounted at. The topmost
//!   component layer runs.
//! - Docker-style wasm images: a regular OCI (or Docker v2) image whose
//!   platform is `wasm` + `wasi*`, with the component a file in its tar
//!   layers named by the config's entrypoint. The layers form the guest's `/`.
//! - Multi-platform indexes: the manifest for a wasm platform is chosen.
//!
//! Images of other platforms (linux/amd64) load, so they can be listed and
//! inspected, but have no wasm entrypoint.

pub use berth_registry::media::Platform;
use berth_registry::media::{self, DOCKER_LAYER_GZIP};
use berth_registry::oci::{Descriptor, ImageIndex, ImageManifest, MediaType};
use berth_registry::{ContentStore, StoreError};
use serde::Deserialize;

/// The config media type of CNCF wasm OCI artifacts.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// A component layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The component layer type of the older wasm-to-oci artifacts, still
/// found in registries.
pub const LEGACY_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
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

impl Layer {
    pub fn descriptor(&self) -> &Descriptor {
        match self {
            Layer::Component(d) | Layer::Bundle { descriptor: d, .. } => d,
        }
    }
}

/// The component an image runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Entrypoint {
    /// A component layer.
    Layer(Box<Descriptor>),
    /// A file in the image's root filesystem (absolute guest path).
    File(String),
}

/// A manifest read from the store and sorted into its parts.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub layers: Vec<Layer>,
    pub platform: Platform,
    entrypoint: Option<Entrypoint>,
    /// How the image's config says to run it (Linux images).
    pub run: RunConfig,
}

/// The parts of an image config berth reads; wasm and OCI configs both fit.
#[derive(Debug, Default, Deserialize)]
struct ConfigView {
    architecture: Option<String>,
    os: Option<String>,
    config: Option<RunConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: Option<String>,
    #[serde(rename = "User")]
    pub user: Option<String>,
}

impl Image {
    /// The image `descriptor` names: a manifest, or the manifest for a wasm
    /// platform (else linux/amd64) when it is an index.
    pub fn resolve(store: &ContentStore, descriptor: &Descriptor) -> Result<Image, ImageError> {
        Self::resolve_for(store, descriptor, None)
    }

    /// [`Image::resolve`] for one backend (`wasm` or `linux`): from an
    /// index, that backend's manifest; a single manifest must be for it.
    pub fn resolve_for(
        store: &ContentStore,
        descriptor: &Descriptor,
        runtime: Option<&str>,
    ) -> Result<Image, ImageError> {
        let image = Self::resolve_index(store, descriptor, runtime)?;
        let linux = image.platform.os == "linux";
        match runtime {
            Some("linux") if !linux => Err(ImageError::Invalid(format!(
                "runtimeClassName linux, but image {} is for {}",
                image.manifest_digest, image.platform
            ))),
            Some("wasm") if linux => Err(ImageError::Invalid(format!(
                "runtimeClassName wasm, but image {} is for {}",
                image.manifest_digest, image.platform
            ))),
            _ => Ok(image),
        }
    }

    fn resolve_index(
        store: &ContentStore,
        descriptor: &Descriptor,
        runtime: Option<&str>,
    ) -> Result<Image, ImageError> {
        let mut digest = descriptor.digest().to_string();
        // An index may point at another index; two levels is all anyone uses.
        for _ in 0..3 {
            let document: serde_json::Value = store.read_json(&digest)?;
            if document.get("manifests").is_none() {
                return Image::load(store, &digest);
            }
            let index: ImageIndex = store.read_json(&digest)?;
            digest = choose_platform(&digest, &index, runtime)?;
        }
        Err(ImageError::Invalid(format!(
            "image index {digest} nests indexes too deeply"
        )))
    }

    /// The image manifest stored under `manifest_digest`.
    pub fn load(store: &ContentStore, manifest_digest: &str) -> Result<Image, ImageError> {
        let manifest: ImageManifest = store.read_json(manifest_digest)?;
        let config_type = manifest.config().media_type().to_string();
        let wasm_artifact =
            config_type == WASM_CONFIG || manifest.layers().iter().any(is_component);
        // Artifacts pushed by other tools may use the empty config `{}`.
        let config: ConfigView = store
            .read_json::<serde_json::Value>(manifest.config().digest().as_ref())
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let platform = Platform {
            os: config
                .os
                .clone()
                .unwrap_or_else(|| if wasm_artifact { "wasip2" } else { "unknown" }.to_owned()),
            architecture: config
                .architecture
                .clone()
                .unwrap_or_else(|| if wasm_artifact { "wasm" } else { "unknown" }.to_owned()),
        };

        let mut layers = Vec::new();
        for d in manifest.layers() {
            layers.push(classify(d).map_err(|reason| ImageError::Layer {
                digest: d.digest().to_string(),
                reason,
            })?);
        }
        let entrypoint = if wasm_artifact {
            layers.iter().rev().find_map(|l| match l {
                Layer::Component(d) => Some(Entrypoint::Layer(Box::new(d.clone()))),
                Layer::Bundle { .. } => None,
            })
        } else if platform.is_wasm() {
            let run = config.config.clone().unwrap_or_default();
            let first = run
                .entrypoint
                .filter(|e| !e.is_empty())
                .or(run.cmd)
                .and_then(|e| e.into_iter().next());
            match first {
                Some(path) if path.starts_with('/') => Some(Entrypoint::File(path)),
                Some(path) => {
                    return Err(ImageError::Invalid(format!(
                        "image {manifest_digest}: entrypoint {path:?} must be an absolute path to the component"
                    )));
                }
                None => None,
            }
        } else {
            None
        };
        Ok(Image {
            manifest_digest: manifest_digest.to_owned(),
            manifest,
            layers,
            platform,
            entrypoint,
            run: config.config.unwrap_or_default(),
        })
    }

    /// The component that runs, if this is a wasm image that names one.
    pub fn entrypoint(&self) -> Option<&Entrypoint> {
        self.entrypoint.as_ref()
    }
}

fn choose_platform(
    digest: &str,
    index: &ImageIndex,
    runtime: Option<&str>,
) -> Result<String, ImageError> {
    media::choose_platform_for(index, runtime)
        .map(|d| d.digest().to_string())
        .map_err(|offered| {
            ImageError::Invalid(format!(
                "image index {digest} has no manifest for wasm or linux/amd64 (it offers: {offered})"
            ))
        })
}

fn is_component(d: &Descriptor) -> bool {
    let media_type = d.media_type().to_string();
    media_type == WASM_LAYER || media_type == LEGACY_WASM_LAYER
}

fn classify(d: &Descriptor) -> Result<Layer, String> {
    if is_component(d) {
        return Ok(Layer::Component(d.clone()));
    }
    let media_type = d.media_type().to_string();
    let compression = match d.media_type() {
        MediaType::ImageLayer => Compression::None,
        MediaType::ImageLayerGzip => Compression::Gzip,
        MediaType::ImageLayerZstd => Compression::Zstd,
        MediaType::Other(other) if other == DOCKER_LAYER_GZIP => Compression::Gzip,
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
