//! Layers as anyone may push them: whatever the tar stream says, applying
//! it never panics and never touches anything outside the root (a lower
//! layer's symlink pointing out included), leaves no setuid file and no
//! device node or FIFO, and stays within its size limits.
#![no_main]

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;

use berth_unpack::{UnpackLimits, apply_layer};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use libfuzzer_sys::fuzz_target;

const LIMITS: UnpackLimits = UnpackLimits {
    max_entry: 1 << 20,
    max_total: 4 << 20,
};

fuzz_target!(|layer: &[u8]| {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let (root_path, outside) = (scratch.path().join("root"), scratch.path().join("outside"));
    std::fs::create_dir_all(root_path.join("etc")).unwrap();
    std::fs::write(root_path.join("etc/passwd"), "lower\n").unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("canary"), "untouched").unwrap();
    // A lower layer's links out of the root: an entry through them must
    // not land outside.
    std::os::unix::fs::symlink("../outside", root_path.join("escape")).unwrap();
    std::os::unix::fs::symlink("/", root_path.join("slash")).unwrap();
    let root = Dir::open_ambient_dir(&root_path, ambient_authority()).unwrap();

    let _ = apply_layer(&root, || Ok(layer), LIMITS);

    let mut names: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "root"],
        "something was made beside the root"
    );
    let outside_names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside_names,
        ["canary"],
        "something was made outside the root"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("canary")).unwrap(),
        "untouched"
    );
    let (mut total, mut seen) = (0, std::collections::HashSet::new());
    check(&root_path, &mut total, &mut seen);
    assert!(
        total <= LIMITS.max_total + LIMITS.max_entry,
        "{total} bytes unpacked"
    );
});

/// No setuid/setgid file, no device or FIFO, no file past the entry limit;
/// `total` counts each file once however many links it has.
fn check(dir: &Path, total: &mut u64, seen: &mut std::collections::HashSet<u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let kind = meta.file_type();
        assert!(
            !(kind.is_block_device()
                || kind.is_char_device()
                || kind.is_fifo()
                || kind.is_socket()),
            "{:?} is a special file",
            entry.path()
        );
        assert_eq!(
            meta.permissions().mode() & 0o6000,
            0,
            "{:?} is setuid/setgid",
            entry.path()
        );
        if kind.is_file() {
            assert!(
                meta.len() <= LIMITS.max_entry,
                "{:?} is {} bytes",
                entry.path(),
                meta.len()
            );
            if seen.insert(std::os::unix::fs::MetadataExt::ino(&meta)) {
                *total += meta.len();
            }
        } else if kind.is_dir() {
            check(&entry.path(), total, seen);
        }
    }
}
