//! Each hostile archive is crafted byte by byte (the `tar` crate refuses to
//! write most of them) and must be refused without touching anything outside
//! the root.

use super::*;

/// An entry as an attacker would write it.
struct Raw<'a> {
    path: &'a [u8],
    kind: EntryType,
    link: &'a [u8],
    data: &'a [u8],
    mode: u32,
}

fn raw(path: &str, kind: EntryType) -> Raw<'_> {
    Raw {
        path: path.as_bytes(),
        kind,
        link: b"",
        data: b"",
        mode: 0o644,
    }
}

fn file<'a>(path: &'a str, data: &'a str) -> Raw<'a> {
    Raw {
        data: data.as_bytes(),
        ..raw(path, EntryType::Regular)
    }
}

fn link<'a>(path: &'a str, kind: EntryType, target: &'a str) -> Raw<'a> {
    Raw {
        link: target.as_bytes(),
        ..raw(path, kind)
    }
}

fn tarball(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..e.path.len()].copy_from_slice(e.path);
        gnu.linkname[..e.link.len()].copy_from_slice(e.link);
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(e.mode);
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A root inside a sandbox directory that also holds an `outside/` a hostile
/// layer might try to reach.
struct Fixture {
    sandbox: tempfile::TempDir,
    root: Dir,
}

impl Fixture {
    fn new() -> Fixture {
        let sandbox = tempfile::tempdir().unwrap();
        std::fs::create_dir(sandbox.path().join("root")).unwrap();
        std::fs::create_dir(sandbox.path().join("outside")).unwrap();
        std::fs::write(sandbox.path().join("outside/secret"), "untouched").unwrap();
        let root = Dir::open_ambient_dir(sandbox.path().join("root"), cap_std::ambient_authority())
            .unwrap();
        Fixture { sandbox, root }
    }

    fn apply(&self, entries: &[Raw<'_>]) -> Result<UnpackStats, UnpackError> {
        self.apply_with(entries, UnpackLimits::default())
    }

    fn apply_with(
        &self,
        entries: &[Raw<'_>],
        limits: UnpackLimits,
    ) -> Result<UnpackStats, UnpackError> {
        let bytes = tarball(entries);
        apply_layer(&self.root, || Ok(&bytes[..]), limits)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.sandbox.path().join(p)
    }

    /// Nothing outside `root/` was created or changed.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = std::fs::read_dir(self.sandbox.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root"]);
        let outside: Vec<_> = std::fs::read_dir(self.path("outside")).unwrap().collect();
        assert_eq!(outside.len(), 1, "something was created in outside/");
        assert_eq!(
            std::fs::read_to_string(self.path("outside/secret")).unwrap(),
            "untouched"
        );
    }
}

fn refused(result: Result<UnpackStats, UnpackError>, entry: &str, why: &str) {
    let err = result.expect_err("the layer should be refused");
    assert_eq!(err.entry, entry, "{err}");
    assert!(err.to_string().contains(why), "{err}");
}

#[test]
fn plain_layers_unpack() {
    let f = Fixture::new();
    let stats = f
        .apply(&[
            raw("app/", EntryType::Directory),
            file("app/index.html", "<h1>hi</h1>"),
            file("./app/data/n.txt", "42"),
            link("app/latest", EntryType::Symlink, "data/n.txt"),
            link("app/copy", EntryType::Link, "app/index.html"),
        ])
        .unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(
        std::fs::read_to_string(f.path("root/app/index.html")).unwrap(),
        "<h1>hi</h1>"
    );
    assert_eq!(
        std::fs::read_to_string(f.path("root/app/latest")).unwrap(),
        "42"
    );
    assert_eq!(
        std::fs::read_to_string(f.path("root/app/copy")).unwrap(),
        "<h1>hi</h1>"
    );
    f.assert_outside_untouched();
}

#[test]
fn dot_dot_paths_are_refused() {
    let f = Fixture::new();
    refused(
        f.apply(&[file("../outside/evil", "x")]),
        "../outside/evil",
        "`..`",
    );
    refused(
        f.apply(&[file("a/../../outside/evil", "x")]),
        "a/../../outside/evil",
        "`..`",
    );
    f.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_refused() {
    let f = Fixture::new();
    let target = f.path("outside/evil");
    let target = target.to_str().unwrap();
    refused(f.apply(&[file(target, "x")]), target, "absolute");
    f.assert_outside_untouched();
}

#[test]
fn writing_through_a_symlink_out_of_the_root_is_refused() {
    let f = Fixture::new();
    let outside = f.path("outside");
    let outside = outside.to_str().unwrap();
    // Absolute and relative escapes, each followed by a write through it.
    refused(
        f.apply(&[
            link("abs", EntryType::Symlink, outside),
            file("abs/pwned", "x"),
        ]),
        "abs/pwned",
        "outside the image root",
    );
    refused(
        f.apply(&[
            link("rel", EntryType::Symlink, "../outside"),
            file("rel/pwned", "x"),
        ]),
        "rel/pwned",
        "outside the image root",
    );
    f.assert_outside_untouched();
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_layer_is_not_written_through() {
    let f = Fixture::new();
    let outside = f.path("outside");
    // The first file makes `d` a known directory; the symlink then takes
    // its place, and the next file must not go through it.
    refused(
        f.apply(&[
            file("d/first", "x"),
            link("d", EntryType::Symlink, outside.to_str().unwrap()),
            file("d/pwned", "x"),
        ]),
        "d/pwned",
        "outside the image root",
    );
    f.assert_outside_untouched();
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let f = Fixture::new();
    let secret = f.path("outside/secret");
    f.apply(&[
        link("s", EntryType::Symlink, secret.to_str().unwrap()),
        file("s", "layer content"),
    ])
    .unwrap();
    let meta = std::fs::symlink_metadata(f.path("root/s")).unwrap();
    assert!(meta.is_file(), "the symlink should have been replaced");
    assert_eq!(
        std::fs::read_to_string(f.path("root/s")).unwrap(),
        "layer content"
    );
    f.assert_outside_untouched();
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let f = Fixture::new();
    refused(
        f.apply(&[link("hl", EntryType::Link, "../outside/secret")]),
        "../outside/secret",
        "`..`",
    );
    let outside = f.path("outside/secret");
    let outside = outside.to_str().unwrap();
    refused(
        f.apply(&[link("hl", EntryType::Link, outside)]),
        outside,
        "absolute",
    );
    // Through an in-root symlink that leads out.
    refused(
        f.apply(&[
            link("out", EntryType::Symlink, "../outside"),
            link("hl", EntryType::Link, "out/secret"),
        ]),
        "hl",
        "outside the image root",
    );
    f.assert_outside_untouched();
}

#[test]
fn a_symlink_replacing_the_root_is_refused() {
    let f = Fixture::new();
    let outside = f.path("outside");
    for name in [".", "./", "/"] {
        let result = f.apply(&[
            link(name, EntryType::Symlink, outside.to_str().unwrap()),
            file("pwned", "x"),
        ]);
        let err = result.expect_err(name);
        assert!(
            err.to_string().contains("replace the root") || err.to_string().contains("absolute"),
            "{name}: {err}"
        );
    }
    assert!(f.path("root").is_dir() && !f.path("root").is_symlink());
    f.assert_outside_untouched();
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    let f = Fixture::new();
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        refused(
            f.apply(&[raw("dev/thing", kind)]),
            "dev/thing",
            "device nodes",
        );
    }
    f.assert_outside_untouched();
}

#[test]
fn setuid_and_setgid_bits_are_dropped() {
    let f = Fixture::new();
    f.apply(&[Raw {
        mode: 0o6755,
        ..file("bin/tool", "#!")
    }])
    .unwrap();
    let mode = std::fs::metadata(f.path("root/bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn oversized_entries_are_refused() {
    let f = Fixture::new();
    let limits = UnpackLimits {
        max_entry: 4,
        max_total: 6,
    };
    refused(
        f.apply_with(&[file("big", "12345")], limits),
        "big",
        "limit per file",
    );
    refused(
        f.apply_with(&[file("a", "1234"), file("b", "1234")], limits),
        "b",
        "over its 6 byte limit",
    );
}

#[test]
fn whiteouts_hide_lower_files_and_opaque_dirs_hide_lower_contents() {
    let f = Fixture::new();
    f.apply(&[
        file("a/b", "lower b"),
        file("a/c", "lower c"),
        file("d", "lower d"),
        file("o/old1", "x"),
        file("o/sub/old2", "x"),
    ])
    .unwrap();
    let stats = f
        .apply(&[
            file("a/.wh.b", ""),
            file(".wh.d", ""),
            file("o/.wh..wh..opq", ""),
            file("o/new", "upper"),
            file("a/c", "upper c"),
        ])
        .unwrap();
    assert_eq!(stats.whiteouts, 3);
    assert!(!f.path("root/a/b").exists());
    assert!(!f.path("root/d").exists());
    assert_eq!(
        std::fs::read_to_string(f.path("root/a/c")).unwrap(),
        "upper c"
    );
    let mut o: Vec<_> = std::fs::read_dir(f.path("root/o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    o.sort();
    assert_eq!(o, ["new"], "opaque dir kept lower content");
    // Whiteout markers themselves are never materialised.
    assert!(!f.path("root/a/.wh.b").exists());
}

#[test]
fn a_whiteout_cannot_delete_outside_the_root() {
    let f = Fixture::new();
    refused(
        f.apply(&[file("../outside/.wh.secret", "")]),
        "../outside/.wh.secret",
        "`..`",
    );
    f.apply(&[link("out", EntryType::Symlink, "../outside")])
        .unwrap();
    let result = f.apply(&[file("out/.wh.secret", "")]);
    assert!(result.is_err(), "a whiteout through a symlink must fail");
    f.assert_outside_untouched();
}
