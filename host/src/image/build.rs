//! `berth build`: a directory with a `berth.toml` in, a tagged image out.
//!
//! ```toml
//! base = "runtime:1"            # optional: an image in the local store to stack on
//! component = "target/wasm32-wasip2/release/app.wasm"
//! [build]                       # optional: run first, in the directory
//! command = "cargo build --release --target wasm32-wasip2"
//! [[files]]                     # each becomes one bundle layer
//! source = "static"
//! mount = "/static"
//! ```
//!
//! The image is an ordinary OCI image for the platform wasip2/wasm: tar
//! layers (each `[[files]]` at its mount path, then the component as a
//! file), an OCI image config whose `Entrypoint` names the component, and
//! `rootfs.diff_ids` for every layer. So containerd unpacks and runs it as
//! it is (with berth's shim), as berth does; a raw `application/wasm` layer
//! would be refused by containerd 1.6 ("mismatched image rootfs and manifest
//! layers").
//!
//! Builds are reproducible: tars list entries in sorted order with
//! ownership and times zeroed, and nothing time-dependent enters the config
//! or manifest, so the same inputs give the same digests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_registry::oci::{Descriptor, ImageManifestBuilder, MediaType};
use berth_registry::{ContentStore, Reference};
use serde::Deserialize;

use crate::progress::Progress;
use crate::runtime::wasm::{BinaryKind, binary_kind};

use sha2::Digest as _;

use super::model::{Compression, Image, ImageError, Layer};

/// Config labels naming the component's top-level imports and exports.
const IMPORTS_LABEL: &str = "dev.berth.component.imports";
const EXPORTS_LABEL: &str = "dev.berth.component.exports";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFile {
    base: Option<String>,
    component: PathBuf,
    build: Option<BuildStep>,
    #[serde(default)]
    files: Vec<Files>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildStep {
    command: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Files {
    source: PathBuf,
    #[serde(default = "root_mount")]
    mount: String,
}

fn root_mount() -> String {
    "/".to_owned()
}

/// The result of a build.
#[derive(Debug)]
pub struct Built {
    pub name: String,
    pub manifest: Descriptor,
    /// The component file the image runs.
    pub component: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("the build command `{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("base image {base}: {source}")]
    Base { base: String, source: ImageError },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Builds `dir` into `store` and tags it `name`.
pub fn build(
    store: &ContentStore,
    dir: &Path,
    name: &Reference,
    progress: &mut dyn Progress,
) -> Result<Built, BuildError> {
    let toml_path = dir.join("berth.toml");
    let text = std::fs::read_to_string(&toml_path).map_err(|e| BuildError::File {
        path: toml_path.clone(),
        reason: e.to_string(),
    })?;
    let spec: BuildFile = toml::from_str(&text).map_err(|e| BuildError::File {
        path: toml_path.clone(),
        reason: e.to_string().trim_end().replace('\n', " "),
    })?;
    for files in &spec.files {
        if !files.mount.starts_with('/') || files.mount.split('/').any(|c| c == "..") {
            return Err(BuildError::File {
                path: toml_path,
                reason: format!(
                    "files.mount {:?} must be an absolute path without `..`",
                    files.mount
                ),
            });
        }
    }

    let mut layers: Vec<Descriptor> = Vec::new();
    let mut diff_ids: Vec<String> = Vec::new();
    if let Some(base) = &spec.base {
        let base_error = |source| BuildError::Base {
            base: base.clone(),
            source,
        };
        let reference: Reference = base.parse().map_err(|e: berth_registry::ReferenceError| {
            base_error(ImageError::Invalid(e.to_string()))
        })?;
        let descriptor = super::lookup(store, &reference).map_err(|e| base_error(e.into()))?;
        // The wasm manifest of a multi-platform base: its layers go into
        // a wasip2/wasm image.
        let image = Image::resolve_for(store, &descriptor, Some("wasm")).map_err(base_error)?;
        progress.note(&format!("base {base}: {} layers", image.layers.len()));
        for layer in &image.layers {
            let refused = |reason: String| {
                base_error(ImageError::Layer {
                    digest: layer.descriptor().digest().to_string(),
                    reason,
                })
            };
            match layer {
                Layer::Bundle {
                    descriptor,
                    compression,
                    mount,
                } if mount == "/" => {
                    diff_ids.push(diff_id(store, descriptor, *compression).map_err(base_error)?);
                    layers.push(descriptor.clone());
                }
                // Only berth reads the mount annotation: containerd would
                // unpack the layer at / instead.
                Layer::Bundle { mount, .. } => {
                    return Err(refused(format!(
                        "a layer berth mounts at {mount}, made by an older berth build: rebuild the base"
                    )));
                }
                Layer::Component(_) => {
                    return Err(refused(
                        "a raw application/wasm layer, which containerd cannot unpack: rebuild the base".into(),
                    ));
                }
            }
        }
    }

    if let Some(step) = &spec.build {
        progress.note(&format!("running `{}`", step.command));
        let status = Command::new("sh")
            .arg("-c")
            .arg(&step.command)
            .current_dir(dir)
            .status()
            .map_err(|e| BuildError::Command {
                command: step.command.clone(),
                reason: e.to_string(),
            })?;
        if !status.success() {
            return Err(BuildError::Command {
                command: step.command.clone(),
                reason: status.to_string(),
            });
        }
    }

    let component_path = dir.join(&spec.component);
    let file_error = |reason: String| BuildError::File {
        path: component_path.clone(),
        reason,
    };
    let component = std::fs::read(&component_path).map_err(|e| file_error(e.to_string()))?;
    let (imports, exports) = component_interface(&component).map_err(file_error)?;
    let component_name = component_path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with(".wh."))
        .unwrap_or("app.wasm")
        .to_owned();

    for files in &spec.files {
        let source = dir.join(&files.source);
        progress.begin(&format!("packing {}", files.source.display()), None);
        let layer = bundle_layer(store, &source, &files.mount, progress)?;
        progress.note(&format!(
            "files {} at {}: {}",
            files.source.display(),
            files.mount,
            layer.digest()
        ));
        diff_ids.push(layer.digest().to_string());
        layers.push(layer);
    }
    // The component goes on top, a file at the root its entrypoint names.
    let component_layer = component_layer(store, &component_name, &component)?;
    progress.note(&format!(
        "component /{component_name} {} ({} KiB)",
        component_layer.digest(),
        component.len().div_ceil(1024)
    ));
    diff_ids.push(component_layer.digest().to_string());
    layers.push(component_layer);

    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "config": {
            "Entrypoint": [format!("/{component_name}")],
            "Labels": {
                IMPORTS_LABEL: imports.join(","),
                EXPORTS_LABEL: exports.join(","),
            },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = store
        .write_bytes(
            MediaType::ImageConfig,
            &serde_json::to_vec(&config).expect("JSON"),
        )
        .map_err(ImageError::from)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| ImageError::Invalid(format!("building the manifest: {e}")))?;
    let manifest = store
        .write_bytes(
            MediaType::ImageManifest,
            &serde_json::to_vec(&manifest).expect("JSON"),
        )
        .map_err(ImageError::from)?;
    let tagged = name.tagged_name();
    store.tag(&tagged, &manifest).map_err(ImageError::from)?;
    Ok(Built {
        name: tagged,
        manifest,
        component: component_path,
    })
}

/// Packs `source` as a reproducible tar layer mounted at `mount`.
fn bundle_layer(
    store: &ContentStore,
    source: &Path,
    mount: &str,
    progress: &mut dyn Progress,
) -> Result<Descriptor, BuildError> {
    let file_error = |e: std::io::Error| BuildError::File {
        path: source.to_owned(),
        reason: e.to_string(),
    };
    if !source.is_dir() {
        return Err(file_error(std::io::Error::other("not a directory")));
    }
    let mut tar_file = tempfile::tempfile().map_err(file_error)?;
    {
        let mut builder = tar::Builder::new(&mut tar_file);
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        // The mount path's own directories come first, as the source's.
        let prefix = PathBuf::from(mount.trim_start_matches('/'));
        let mut parent = PathBuf::new();
        for part in prefix.components() {
            parent.push(part);
            builder.append_dir(&parent, source).map_err(file_error)?;
        }
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(source.join(&rel))
                .map_err(file_error)?
                .collect::<Result<_, _>>()
                .map_err(file_error)?;
            entries.sort_by_key(|e| e.file_name());
            // Depth-first in sorted order: push in reverse so the smallest pops first.
            let mut dirs = Vec::new();
            for entry in entries {
                let rel_path = rel.join(entry.file_name());
                builder
                    .append_path_with_name(entry.path(), prefix.join(&rel_path))
                    .map_err(file_error)?;
                let meta = entry.metadata().map_err(file_error)?;
                if meta.is_dir() {
                    dirs.push(rel_path);
                } else if meta.is_file() {
                    progress.advance(meta.len());
                }
            }
            stack.extend(dirs.into_iter().rev());
        }
        builder.finish().map_err(file_error)?;
    }
    tar_file.flush().map_err(file_error)?;
    use std::io::Seek;
    tar_file.rewind().map_err(file_error)?;
    let (digest, size) = store
        .write_blob(&mut tar_file, None)
        .map_err(ImageError::from)?;
    Ok(berth_registry::descriptor(
        MediaType::ImageLayer,
        &digest,
        size,
    ))
}

/// A tar layer holding the component as the file `/name`.
fn component_layer(
    store: &ContentStore,
    name: &str,
    component: &[u8],
) -> Result<Descriptor, BuildError> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(component.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(Vec::with_capacity(component.len() + 2048));
    let tar = builder
        .append_data(&mut header, name, component)
        .and_then(|()| builder.into_inner())
        .map_err(|e| BuildError::File {
            path: PathBuf::from(name),
            reason: format!("packing the component: {e}"),
        })?;
    Ok(store
        .write_bytes(MediaType::ImageLayer, &tar)
        .map_err(ImageError::from)?)
}

/// The digest of a layer's uncompressed content: what an image config's
/// `rootfs.diff_ids` lists.
fn diff_id(
    store: &ContentStore,
    layer: &Descriptor,
    compression: Compression,
) -> Result<String, ImageError> {
    let digest = layer.digest().to_string();
    if compression == Compression::None {
        return Ok(digest);
    }
    let blob = std::io::BufReader::new(store.open_blob(&digest)?);
    let mut content: Box<dyn std::io::Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(blob)
                .map_err(|e| ImageError::Invalid(format!("layer {digest}: {e}")))?,
        ),
        Compression::None => Box::new(blob),
    };
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut content, &mut hasher)
        .map_err(|e| ImageError::Invalid(format!("layer {digest}: {e}")))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The component's top-level import and export names.
fn component_interface(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    match binary_kind(bytes) {
        BinaryKind::Component => {}
        BinaryKind::NotWasm => return Err("not a WebAssembly file".to_owned()),
        BinaryKind::CoreModule => {
            return Err("a core WebAssembly module, not a component".to_owned());
        }
    }
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid component: {e}"))? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            wasmparser::Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}
