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
//! Builds are reproducible: bundle tars list entries in sorted order with
//! ownership and times zeroed, and nothing time-dependent enters the config
//! or manifest, so the same inputs give the same digests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_registry::oci::{Descriptor, ImageManifestBuilder, MediaType};
use berth_registry::{ContentStore, Reference};
use serde::Deserialize;

use crate::progress::Progress;
use crate::runtime::wasm::{BinaryKind, binary_kind};

use super::model::{Image, ImageError, MOUNT_ANNOTATION, WASM_CONFIG, WASM_LAYER};

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
    if let Some(base) = &spec.base {
        let base_error = |source| BuildError::Base {
            base: base.clone(),
            source,
        };
        let reference: Reference = base.parse().map_err(|e: berth_registry::ReferenceError| {
            base_error(ImageError::Invalid(e.to_string()))
        })?;
        let descriptor = super::lookup(store, &reference).map_err(|e| base_error(e.into()))?;
        let image = Image::resolve(store, &descriptor).map_err(base_error)?;
        progress.note(&format!("base {base}: {} layers", image.layers.len()));
        layers.extend(image.layers.iter().map(|l| l.descriptor().clone()));
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
    let component = std::fs::read(&component_path).map_err(|e| BuildError::File {
        path: component_path.clone(),
        reason: e.to_string(),
    })?;
    let (imports, exports) =
        component_interface(&component).map_err(|reason| BuildError::File {
            path: component_path.clone(),
            reason,
        })?;
    let component_layer = store
        .write_bytes(MediaType::Other(WASM_LAYER.to_owned()), &component)
        .map_err(ImageError::from)?;
    progress.note(&format!(
        "component {} ({} KiB)",
        component_layer.digest(),
        component.len().div_ceil(1024)
    ));

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
        layers.push(layer);
    }
    // The component goes on top: the topmost component layer runs.
    layers.push(component_layer);

    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": layers.iter().map(|l| l.digest().to_string()).collect::<Vec<_>>(),
        "component": { "imports": imports, "exports": exports },
    });
    let config = store
        .write_bytes(
            MediaType::Other(WASM_CONFIG.to_owned()),
            &serde_json::to_vec(&config).expect("JSON"),
        )
        .map_err(ImageError::from)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(WASM_CONFIG.to_owned()))
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
                    .append_path_with_name(entry.path(), &rel_path)
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
    let mut descriptor = berth_registry::descriptor(MediaType::ImageLayer, &digest, size);
    descriptor.set_annotations(Some(HashMap::from([(
        MOUNT_ANNOTATION.to_owned(),
        mount.to_owned(),
    )])));
    Ok(descriptor)
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
