//! Applying a layer to a directory, safely.
//!
//! This is where container runtimes have had their worst bugs, so every path
//! goes through a cap-std `Dir` opened on the target root: resolution never
//! leaves it, whatever the archive's symlinks say. On top of that, an entry is
//! refused — failing the whole layer with its name — when it has an absolute
//! path or a `..` component, would replace the root itself (a symlink named
//! `.` or `/`, CVE-2021-29136), is a device node or FIFO, or exceeds the size
//! limits. setuid/setgid bits are dropped. An existing entry is removed before
//! a new one takes its place, so nothing is ever written *through* a symlink.
//!
//! Whiteouts follow the OCI layer spec: `.wh.<name>` deletes `<name>` from
//! lower layers and `.wh..wh..opq` empties its directory of lower-layer
//! content. Both only ever touch lower layers, so a first pass applies every
//! deletion and a second pass extracts the entries.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, Permissions};
use std::os::unix::fs::PermissionsExt;
use tar::EntryType;

/// Bounds on what one layer may unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// The largest single file.
    pub max_entry: u64,
    /// All files of the layer together.
    pub max_total: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entry: 1 << 30,
            max_total: 8 << 30,
        }
    }
}

/// A refused or failed entry, named as it appears in the archive.
#[derive(Debug, thiserror::Error)]
#[error("layer entry {entry:?}: {reason}")]
pub struct UnpackError {
    pub entry: String,
    pub reason: String,
}

/// What a layer contained.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies the tar stream produced by `open` (called twice: once for
/// whiteouts, once for content) on top of `root`.
pub fn apply_layer<R: Read>(
    root: &Dir,
    mut open: impl FnMut() -> std::io::Result<R>,
    limits: UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let mut stats = UnpackStats::default();
    let archive_error = |e: std::io::Error| UnpackError {
        entry: String::new(),
        reason: format!("reading the layer: {e}"),
    };

    // Pass 1: deletions from lower layers.
    let mut archive = tar::Archive::new(open().map_err(archive_error)?);
    for entry in archive.entries().map_err(archive_error)? {
        let entry = entry.map_err(archive_error)?;
        let raw = entry_name(&entry);
        let path = clean_path(&raw)?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        if name == OPAQUE {
            empty_dir(root, parent)
                .map_err(|e| fail(&raw, format!("making the directory opaque: {e}")))?;
            stats.whiteouts += 1;
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let target = parent.join(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(fail(&raw, "whiteout names no file".into()));
            }
            remove_any(root, &target)
                .map_err(|e| fail(&raw, format!("applying the whiteout: {e}")))?;
            stats.whiteouts += 1;
        }
    }

    // Pass 2: content.
    let mut archive = tar::Archive::new(open().map_err(archive_error)?);
    let mut directories = Vec::new();
    // Directories this pass made or found, so each file's parents are not
    // walked again; an entry that replaces one forgets it and all below.
    let mut known_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let raw = entry_name(&entry);
        let path = clean_path(&raw)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(WHITEOUT_PREFIX) {
            continue;
        }
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o1777; // no setuid/setgid
        if path.as_os_str().is_empty() {
            // The root itself: only a directory entry may name it, and then
            // it changes nothing.
            if kind == EntryType::Directory {
                continue;
            }
            return Err(fail(&raw, "would replace the root of the image".into()));
        }
        stats.entries += 1;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !known_dirs.contains(parent)
        {
            create_parents(root, parent).map_err(|reason| fail(&raw, reason))?;
            known_dirs.insert(parent.to_owned());
        }
        if kind != EntryType::Directory {
            forget_dirs(&mut known_dirs, &path);
        }
        match kind {
            EntryType::Directory => {
                match root.symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(root, &path).map_err(|e| fail(&raw, e.to_string()))?;
                        root.create_dir(&path)
                            .map_err(|e| fail(&raw, escape_or(e, "creating it")))?;
                    }
                    Err(_) => root
                        .create_dir(&path)
                        .map_err(|e| fail(&raw, escape_or(e, "creating it")))?,
                }
                // Permissions last, so a read-only directory can still be filled.
                directories.push((path, mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = header.size().unwrap_or(0);
                if size > limits.max_entry {
                    return Err(fail(
                        &raw,
                        format!(
                            "{size} bytes is over the {} byte limit per file",
                            limits.max_entry
                        ),
                    ));
                }
                if stats.bytes + size > limits.max_total {
                    return Err(fail(
                        &raw,
                        format!("the layer is over its {} byte limit", limits.max_total),
                    ));
                }
                // Whatever was there (a symlink or a hard link to another
                // file included) is replaced, never written through.
                let new_file =
                    || root.open_with(&path, OpenOptions::new().write(true).create_new(true));
                let mut file = match new_file() {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        remove_any(root, &path).map_err(|e| fail(&raw, e.to_string()))?;
                        new_file()
                    }
                    other => other,
                }
                .map_err(|e| fail(&raw, escape_or(e, "creating it")))?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| fail(&raw, format!("writing it: {e}")))?;
                stats.bytes += copied;
                file.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))
                    .map_err(|e| fail(&raw, format!("setting its mode: {e}")))?;
            }
            EntryType::Symlink => {
                let target = header
                    .link_name()
                    .map_err(|e| fail(&raw, format!("reading its target: {e}")))?
                    .ok_or_else(|| fail(&raw, "symlink without a target".into()))?;
                remove_any(root, &path).map_err(|e| fail(&raw, e.to_string()))?;
                // The target is stored as written; it is never followed here,
                // and cap-std refuses to follow it out of the root later.
                root.symlink_contents(&target, &path)
                    .map_err(|e| fail(&raw, escape_or(e, "creating the symlink")))?;
            }
            EntryType::Link => {
                let target = header
                    .link_name()
                    .map_err(|e| fail(&raw, format!("reading its target: {e}")))?
                    .ok_or_else(|| fail(&raw, "hard link without a target".into()))?;
                let target = clean_path(&target.to_string_lossy())?;
                remove_any(root, &path).map_err(|e| fail(&raw, e.to_string()))?;
                root.hard_link(&target, root, &path)
                    .map_err(|e| fail(&raw, escape_or(e, "creating the hard link")))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(fail(
                    &raw,
                    "device nodes and FIFOs are not allowed in images".into(),
                ));
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {}
            other => return Err(fail(&raw, format!("unsupported entry type {other:?}"))),
        }
    }
    for (path, mode) in directories.into_iter().rev() {
        root.set_permissions(
            &path,
            Permissions::from_std(std::fs::Permissions::from_mode(mode | 0o700)),
        )
        .map_err(|e| {
            fail(
                &path.display().to_string(),
                format!("setting its mode: {e}"),
            )
        })?;
    }
    Ok(stats)
}

fn fail(entry: &str, reason: String) -> UnpackError {
    UnpackError {
        entry: entry.to_owned(),
        reason,
    }
}

/// cap-std reports an escape as PermissionDenied; say so plainly.
fn escape_or(e: std::io::Error, doing: &str) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("{doing} would reach outside the image root ({e})")
    } else {
        format!("{doing}: {e}")
    }
}

/// Drops `path` and everything below it from `known`.
fn forget_dirs(known: &mut BTreeSet<PathBuf>, path: &Path) {
    let below: Vec<PathBuf> = known
        .range(path.to_owned()..)
        .take_while(|p| p.starts_with(path))
        .cloned()
        .collect();
    for p in below {
        known.remove(&p);
    }
}

/// Creates `parent` and its ancestors. A symlink on the way is followed only
/// while it stays inside the root; one that leads out is named.
fn create_parents(root: &Dir, parent: &Path) -> Result<(), String> {
    root.create_dir_all(parent).map_err(|e| {
        let symlink = parent
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .find(|a| root.symlink_metadata(a).is_ok_and(|m| m.is_symlink()));
        match symlink {
            Some(link) => format!(
                "its parent {} is a symlink that leads outside the image root or not to a directory",
                link.display()
            ),
            None => escape_or(e, "creating its parent"),
        }
    })
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

/// A relative path with no `..`, `.` dropped; refuses absolute paths.
fn clean_path(raw: &str) -> Result<PathBuf, UnpackError> {
    let mut clean = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(fail(raw, "absolute paths are not allowed".into()));
            }
            Component::ParentDir => return Err(fail(raw, "`..` is not allowed in paths".into())),
        }
    }
    Ok(clean)
}

/// Removes whatever is at `path` (file, symlink or directory tree); absent is fine.
fn remove_any(root: &Dir, path: &Path) -> std::io::Result<()> {
    match root.symlink_metadata(path) {
        Ok(m) if m.is_dir() => root.remove_dir_all(path),
        Ok(_) => root.remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the contents of `dir` (kept itself), if it exists.
fn empty_dir(root: &Dir, dir: &Path) -> std::io::Result<()> {
    let entries = if dir.as_os_str().is_empty() {
        root.entries()
    } else {
        match root.symlink_metadata(dir) {
            Ok(m) if m.is_dir() => root.read_dir(dir),
            _ => return Ok(()),
        }
    };
    for entry in entries? {
        remove_any(root, &dir.join(entry?.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
