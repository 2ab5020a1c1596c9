//! From a file on disk to a pre-instantiated `wasi:http` proxy, with an error
//! that names the file and says what is wrong at each step.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::cache::Artifacts;
use super::workload::Host;
use berth_runtime::RuntimeError;

const HANDLER: &str = "wasi:http/incoming-handler@0.2";
/// What a command exports: `wasmtime run` and a shell call it.
const RUN: &str = "wasi:cli/run@0.2";

/// What a component can be run as, by the interfaces it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worlds {
    /// `wasi:http/incoming-handler`: it serves requests.
    pub http: bool,
    /// `wasi:cli/run`: it runs to an exit code.
    pub command: bool,
}

/// Checks the header and compiles (or takes from the compile cache) the
/// component in `bytes`; it and the names of what it exports.
pub(super) fn compile(
    artifacts: &Artifacts,
    path: &Path,
    bytes: &[u8],
    digest: Option<[u8; 32]>,
) -> Result<(Component, Vec<String>), RuntimeError> {
    check_header(path, bytes)?;
    let engine = artifacts.engine();
    let component = artifacts
        .component(bytes, digest)
        .map_err(|e| RuntimeError::Compile {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
    let exports = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    Ok((component, exports))
}

/// The worlds a component's exports make it.
pub(super) fn worlds(exports: &[String]) -> Worlds {
    Worlds {
        http: exports.iter().any(|name| name.starts_with(HANDLER)),
        command: exports.iter().any(|name| name.starts_with(RUN)),
    }
}

/// Exports for a message: `nothing` when there are none.
pub(super) fn listed(exports: &[String]) -> String {
    if exports.is_empty() {
        "nothing".to_owned()
    } else {
        exports.join(", ")
    }
}

/// Reads `path` as a component file (regular files only: a FIFO or a
/// device would block or never end).
pub(super) fn read(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    regular_file(path)?;
    std::fs::read(path).map_err(|source| read_error(path, source))
}

fn read_error(path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Read {
        path: path.to_owned(),
        source,
    }
}

/// `path`'s metadata, if it is a regular file: a FIFO or a device would
/// block or never end.
fn regular_file(path: &Path) -> Result<std::fs::Metadata, RuntimeError> {
    let metadata = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !metadata.is_file() {
        return Err(read_error(
            path,
            std::io::Error::other("not a regular file"),
        ));
    }
    Ok(metadata)
}

/// A component ready to instantiate, by what it is: an HTTP handler
/// (served), with its `run` when it is of both worlds, or a command (run).
#[derive(Clone)]
pub(super) enum Pre {
    Http(ProxyPre<Host>, Option<CommandPre<Host>>),
    Command(CommandPre<Host>),
}

/// Reads, checks, compiles (or loads from the cache) and links `path`.
/// CPU-heavy: call from a blocking thread.
pub(super) fn load(
    artifacts: &Artifacts,
    linker: &Linker<Host>,
    path: &Path,
    loaded: &Mutex<Loaded>,
) -> Result<Pre, RuntimeError> {
    let metadata = regular_file(path)?;
    // The same file unchanged since it was loaded is the same component:
    // ten thousand replicas need not read and hash it ten thousand times.
    let stamp = FileStamp::of(&metadata);
    if let Some(pre) = loaded.lock().expect("lock").by_file.get(&stamp) {
        return Ok(pre.clone());
    }
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let key: [u8; 32] = Sha256::digest(&bytes).into();
    let known = loaded.lock().expect("lock").by_content.get(&key).cloned();
    if let Some(pre) = known {
        loaded
            .lock()
            .expect("lock")
            .by_file
            .insert(stamp, pre.clone());
        return Ok(pre);
    }
    let (component, exports) = compile(artifacts, path, &bytes, Some(key))?;
    let worlds = worlds(&exports);
    if !worlds.http && !worlds.command {
        return Err(RuntimeError::NoHandler {
            path: path.to_owned(),
            exports: listed(&exports),
        });
    }
    let link_error = |e: wasmtime::Error| RuntimeError::Link {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    };
    let instance = linker.instantiate_pre(&component).map_err(link_error)?;
    let pre = if worlds.http {
        // A `run` of a shape berth cannot call leaves it an HTTP
        // component, as it was before `run` was ever called.
        let run = if worlds.command {
            CommandPre::new(instance.clone()).ok()
        } else {
            None
        };
        Pre::Http(
            ProxyPre::new(instance).map_err(|e| RuntimeError::NoHandler {
                path: path.to_owned(),
                exports: format!("{} ({e:#})", exports.join(", ")),
            })?,
            run,
        )
    } else {
        Pre::Command(CommandPre::new(instance).map_err(link_error)?)
    };
    let mut loaded = loaded.lock().expect("lock");
    loaded.by_content.insert(key, pre.clone());
    loaded.by_file.insert(stamp, pre.clone());
    Ok(pre)
}

/// Components already loaded: replicas of one image share one, whatever
/// path their pod sees it at.
#[derive(Default)]
pub(super) struct Loaded {
    /// By the sha256 of their bytes.
    by_content: HashMap<[u8; 32], Pre>,
    /// By the file they were read from, as it was then.
    by_file: HashMap<FileStamp, Pre>,
}

/// A file as it was: which it is (device and inode), its size and when it
/// last changed. A rewritten file (new size or time, or a new inode when
/// replaced) is read again.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    modified: (i64, i64),
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt as _;
        FileStamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
        }
    }
}

/// Tells apart "not wasm" and "a core module" before the compiler gives a
/// less helpful message for either.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let path = path.to_owned();
    match binary_kind(bytes) {
        BinaryKind::Component => Ok(()),
        BinaryKind::NotWasm => Err(RuntimeError::NotWasm { path }),
        BinaryKind::CoreModule => Err(RuntimeError::CoreModule { path }),
    }
}

/// What a binary's header says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    NotWasm,
    CoreModule,
    Component,
}

/// Reads the 8-byte header: the `\0asm` magic, then version and layer
/// (bytes 6..8: 0 for a core module, 1 for a component).
pub fn binary_kind(bytes: &[u8]) -> BinaryKind {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        BinaryKind::NotWasm
    } else if bytes[6..8] == [0, 0] {
        BinaryKind::CoreModule
    } else {
        BinaryKind::Component
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        let p = Path::new("x.wasm");
        assert!(matches!(
            check_header(p, b"#!/bin/sh\necho hi"),
            Err(RuntimeError::NotWasm { .. })
        ));
        let core = wat::parse_str("(module)").unwrap();
        assert!(matches!(
            check_header(p, &core),
            Err(RuntimeError::CoreModule { .. })
        ));
        let component = wat::parse_str("(component)").unwrap();
        assert!(check_header(p, &component).is_ok());
    }
}
