//! Compiled components kept on disk, so a component is compiled once per
//! engine settings and every later start maps the compiled code instead.
//!
//! A file per component and engine: `<sha256 of the component>-<engine
//! settings hash>.cwasm`, the engine's own serialized artifact, written
//! whole (a temporary file renamed into place) and loaded with
//! `Component::deserialize_file`, which maps it: nothing is read into a
//! buffer or decompressed, and only the pages run are faulted in. wasmtime's
//! own cache was used before; it compresses artifacts with zstd, reads them
//! whole, and keeps a worker thread writing usage statistics beside each
//! file — a measurable part of a short command's run (bench/commands).
//! An artifact wasmtime refuses (another version or settings, a damaged
//! file) is compiled again and replaced. Trusted as the engine's own
//! output, as wasmtime's cache trusts its files: the directory is made
//! mode 0700 and each file is written whole and synced before it is
//! renamed into place. Where the directory's filesystem is mounted
//! `noexec` (mapped code cannot run there) artifacts are read into memory
//! instead of mapped.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// When the directory grows past this, the oldest artifacts go (as a new
/// one is written).
const MAX_BYTES: u64 = 1 << 30;

#[derive(Clone)]
pub(super) struct Artifacts {
    engine: Engine,
    dir: Option<PathBuf>,
    /// The engine's version and settings, as far as compiled code depends
    /// on them.
    settings: u64,
}

impl Artifacts {
    /// Artifacts of `engine` under `dir` (none kept when `None`).
    pub fn new(engine: Engine, dir: Option<&Path>) -> Artifacts {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = dir.and_then(|dir| {
            let dir = dir.join("components");
            let made = {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
            };
            match made {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::warn!(
                        "compiled-code cache at {} unavailable ({e}); compiling every start",
                        dir.display()
                    );
                    None
                }
            }
        });
        Artifacts {
            engine,
            dir,
            settings: hasher.finish(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The component in `bytes` (whose sha256 is `digest`), from its
    /// artifact if there is one, else compiled and its artifact kept.
    pub fn component(&self, bytes: &[u8], digest: Option<[u8; 32]>) -> wasmtime::Result<Component> {
        let engine = &self.engine;
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes);
        };
        let digest = digest.unwrap_or_else(|| Sha256::digest(bytes).into());
        let path = dir.join(format!(
            "{}-{:016x}.cwasm",
            hex::encode(digest),
            self.settings
        ));
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::debug!("compiling again: {}: {e:#}", path.display()),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = keep(&path, &component) {
            tracing::warn!("keeping compiled code at {}: {e:#}", path.display());
        }
        // The directory grows only here: it is kept in bounds here, not on
        // every start (a `berth run` of a command reads nothing else).
        trim(dir, MAX_BYTES);
        if let Some(cache) = dir.parent() {
            // What wasmtime's own cache kept beside it before.
            let _ = std::fs::remove_dir_all(cache.join("modules"));
        }
        Ok(component)
    }
}

/// The artifact at `path`, mapped (or read, where mapped code may not run).
#[expect(
    unsafe_code,
    reason = "deserializing trusts the file: it is this engine's own output, in berth's home"
)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written whole by `keep` from a component this
    // engine compiled, in a directory only berth's user may write; wasmtime
    // checks its version and settings before using it.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Ok(component),
        Err(mapped) => {
            let bytes = std::fs::read(path)?;
            // SAFETY: as above.
            let component = unsafe { Component::deserialize(engine, &bytes) };
            if component.is_ok() {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "compiled code in {} cannot be mapped ({mapped:#}); reading it instead \
                         (a filesystem mounted noexec?)",
                        path.parent().unwrap_or(path).display()
                    );
                });
            }
            component
        }
    }
}

/// Writes `component`'s artifact at `path`, whole or not at all.
fn keep(path: &Path, component: &Component) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    // Its own name for each writer, of this process or another.
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = path.with_extension(format!("tmp-{}-{writer}", std::process::id()));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        use std::io::Write as _;
        file.write_all(&bytes)?;
        // Whole on disk before it has its name: a crash leaves no torn
        // artifact to be mapped and run.
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e.into());
    }
    if let Err(e) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e.into());
    }
    Ok(())
}

/// Removes the oldest artifacts in `dir` (and temporary files a killed
/// writer left) until it holds at most `max` bytes.
fn trim(dir: &Path, max: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "cwasm") {
            let old = metadata
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        files.push((
            metadata.modified().unwrap_or(std::time::UNIX_EPOCH),
            metadata.len(),
            path,
        ));
    }
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    files.sort();
    for (_, size, path) in files {
        if total <= max {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_compiled_once_then_mapped_and_a_damaged_artifact_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let artifacts = Artifacts::new(engine, Some(dir.path()));
        let wasm = wat::parse_str("(component (core module))").unwrap();
        artifacts.component(&wasm, None).unwrap();
        let kept: Vec<PathBuf> = std::fs::read_dir(dir.path().join("components"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].extension().is_some_and(|e| e == "cwasm"));
        use std::os::unix::fs::MetadataExt as _;
        let written = std::fs::metadata(&kept[0]).unwrap().ino();
        // Loaded from the artifact: not written again (a new file would be
        // a new inode).
        artifacts.component(&wasm, None).unwrap();
        assert_eq!(std::fs::metadata(&kept[0]).unwrap().ino(), written);
        // A damaged one is compiled again and replaced.
        std::fs::write(&kept[0], b"not an artifact").unwrap();
        artifacts.component(&wasm, None).unwrap();
        assert!(std::fs::metadata(&kept[0]).unwrap().len() > 100);
    }

    #[test]
    fn the_oldest_artifacts_go_past_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["a.cwasm", "b.cwasm", "c.cwasm"].iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        trim(dir.path(), 250);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b.cwasm", "c.cwasm"]);
    }
}
