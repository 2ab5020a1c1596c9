//! Images end to end: `berth build` from a directory, `berth run NAME:TAG`,
//! layers stacked on a base, and corruption caught on use.

use std::path::Path;
use std::process::Command;

use berth_tests::{BerthRun, berth, get, guests};

/// Builds `dir` as `tag`; returns the manifest digest.
fn build(home: &Path, dir: &Path, tag: &str) -> String {
    let out = berth(home, &["build", dir.to_str().unwrap(), "-t", tag]);
    assert!(out.success, "berth build failed: {}", out.stderr);
    let line = out.stdout.lines().last().expect("build prints the image");
    let (name, digest) = line.split_once(' ').expect("NAME DIGEST");
    assert_eq!(name, tag);
    assert!(digest.starts_with("sha256:"), "{line}");
    digest.to_owned()
}

/// An app directory: the echo guest plus files, each map entry a path and content.
fn app_dir(files: &[(&str, &str)], toml_extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guests::ECHO, dir.path().join("echo.wasm")).unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    std::fs::write(
        dir.path().join("berth.toml"),
        format!("component = \"echo.wasm\"\n{toml_extra}"),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_built_image_runs_with_its_bundle_and_nothing_else() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(
        &[
            ("static/hello.txt", "bundled hello"),
            ("static/sub/deep.txt", "deep"),
        ],
        "[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    );
    let first = build(home.path(), app.path(), "app:1");
    // The same inputs give the same digest.
    assert_eq!(build(home.path(), app.path(), "app:2"), first);

    let listing = berth(home.path(), &["images"]);
    assert!(listing.success);
    assert!(
        listing.stdout.contains("app:1") && listing.stdout.contains("app:2"),
        "{}",
        listing.stdout
    );

    let run = BerthRun::start_in(home.path(), "app:1", &[]);
    let reply = get(&format!(
        "{}/?read=/static/hello.txt&read=/static/sub/deep.txt&list=/static",
        run.url
    ))
    .await;
    assert!(
        reply
            .body
            .contains("read /static/hello.txt: ok: bundled hello"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("read /static/sub/deep.txt: ok: deep"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("list /static: ok: hello.txt,sub"),
        "{}",
        reply.body
    );
    for outside in ["/etc/passwd", "/static/../../etc/passwd", "/echo.wasm"] {
        let reply = get(&format!("{}/?read={outside}", run.url)).await;
        assert!(
            reply.body.contains(&format!("read {outside}: error")),
            "{outside}: {}",
            reply.body
        );
    }
    // The bundle is mounted read-only.
    let reply =
        berth_tests::request("POST", &format!("{}/?write=/static/new.txt", run.url), "x").await;
    assert!(
        reply.body.contains("write /static/new.txt: error"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn app_layers_override_and_whiteout_base_files() {
    let home = tempfile::tempdir().unwrap();
    let base = app_dir(
        &[
            ("root/a.txt", "base a"),
            ("root/b.txt", "base b"),
            ("root/keep.txt", "base keep"),
        ],
        "[[files]]\nsource = \"root\"\n",
    );
    build(home.path(), base.path(), "base:1");
    // `.wh.b.txt` in the app's files hides the base's b.txt (OCI whiteout).
    let app = app_dir(
        &[("root/a.txt", "app a"), ("root/.wh.b.txt", "")],
        "base = \"base:1\"\n[[files]]\nsource = \"root\"\n",
    );
    build(home.path(), app.path(), "app:1");

    let run = BerthRun::start_in(home.path(), "app:1", &[]);
    let reply = get(&format!(
        "{}/?read=/a.txt&read=/b.txt&read=/keep.txt&list=/",
        run.url
    ))
    .await;
    assert!(
        reply.body.contains("read /a.txt: ok: app a"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("read /b.txt: error"), "{}", reply.body);
    assert!(
        reply.body.contains("read /keep.txt: ok: base keep"),
        "{}",
        reply.body
    );
    assert!(
        // The component is a file of the image's root filesystem too.
        reply.body.contains("list /: ok: a.txt,echo.wasm,keep.txt"),
        "{}",
        reply.body
    );
}

#[test]
fn a_corrupted_blob_is_detected_not_served() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(
        &[("static/hello.txt", "bundled hello")],
        "[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    );
    build(home.path(), app.path(), "app:1");
    // Flip the content of the bundle layer (the only tar blob) on disk.
    let blobs = home.path().join("store/blobs/sha256");
    let mut corrupted = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.windows(13).any(|w| w == b"bundled hello") {
            let at = bytes
                .windows(13)
                .position(|w| w == b"bundled hello")
                .unwrap();
            bytes[at] = b'B';
            std::fs::write(&path, bytes).unwrap();
            corrupted += 1;
        }
    }
    assert_eq!(corrupted, 1);
    let out = berth(home.path(), &["run", "app:1", "--listen", "127.0.0.1:0"]);
    assert!(!out.success, "a corrupted image ran");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("corrupt"), "{}", out.stderr);
}

#[test]
fn bad_build_files_name_the_problem() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(&[], "unknown_field = 1\n");
    let out = berth(
        home.path(),
        &["build", app.path().to_str().unwrap(), "-t", "x:1"],
    );
    assert!(!out.success);
    assert!(
        out.stderr.contains("berth.toml") && out.stderr.contains("unknown_field"),
        "{}",
        out.stderr
    );

    let out = berth(
        home.path(),
        &["run", "nothing:here", "--listen", "127.0.0.1:0"],
    );
    assert!(!out.success);
    assert!(
        out.stderr.contains("no image nothing:here"),
        "{}",
        out.stderr
    );
}

/// skopeo, which CI installs: a test that needs it fails rather than skips.
fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is required for this test (Debian package `skopeo`; .ci/run installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn skopeo_reads_the_store_and_berth_reads_what_skopeo_writes() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(
        &[("static/hello.txt", "via skopeo")],
        "[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    );
    let digest = build(home.path(), app.path(), "app:1");
    let store = home.path().join("store");

    // skopeo sees the manifest berth wrote, byte for byte.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:app:1", store.display()),
    ]);
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    use sha2::Digest as _;
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(raw.as_bytes()))
        ),
        digest
    );

    // A layout written by skopeo is one berth runs from.
    let other = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        &format!("oci:{}:app:1", store.display()),
        &format!("oci:{}:copied:7", other.path().join("store").display()),
    ]);
    let run = BerthRun::start_in(other.path(), "copied:7", &[]);
    let reply = get(&format!("{}/?read=/static/hello.txt", run.url)).await;
    assert!(
        reply
            .body
            .contains("read /static/hello.txt: ok: via skopeo"),
        "{}",
        reply.body
    );
}

/// umoci, which CI installs: a test that needs it fails rather than skips.
fn umoci(args: &[&str]) -> String {
    let out = Command::new("umoci")
        .args(args)
        .output()
        .expect("umoci is required for this test (Debian package `umoci`; .ci/run installs it)");
    assert!(
        out.status.success(),
        "umoci {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// umoci writes, into berth's own store, the shape Docker's wasm images have:
/// a plain OCI image for wasip2/wasm whose config names the component, a
/// file in its rootfs layers. berth runs it with that rootfs as `/`.
#[tokio::test]
async fn umoci_writes_a_docker_style_wasm_image_into_the_store_and_berth_runs_it() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(&[], "");
    build(home.path(), app.path(), "app:1");
    let store = home.path().join("store");
    let image = format!("{}:wasmapp", store.display());

    // umoci's own workflow: unpack a bundle, change its rootfs, repack.
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    umoci(&["new", "--image", &image]);
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &image,
        bundle.to_str().unwrap(),
    ]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("srv")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy(guests::ECHO, rootfs.join("srv/echo.wasm")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "from umoci's layer").unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--os",
        "wasip2",
        "--architecture",
        "wasm",
        "--config.entrypoint",
        "/srv/echo.wasm",
    ]);
    // umoci reads the store berth wrote and keeps berth's tag.
    let listed = umoci(&["ls", "--layout", store.to_str().unwrap()]);
    assert!(listed.lines().any(|l| l == "app:1"), "{listed}");
    assert!(listed.lines().any(|l| l == "wasmapp"), "{listed}");

    let images = berth(home.path(), &["images"]);
    assert!(images.stdout.contains("wasmapp"), "{}", images.stdout);
    let inspect = berth(home.path(), &["inspect", "wasmapp"]);
    assert!(inspect.success, "{}", inspect.stderr);
    let inspected: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(inspected["platform"], "wasip2/wasm");
    assert_eq!(inspected["entrypoint"], "/srv/echo.wasm");

    let run = BerthRun::start_in(home.path(), "wasmapp", &[]);
    let reply = get(&format!("{}/?read=/etc/motd", run.url)).await;
    assert!(
        reply
            .body
            .contains("read /etc/motd: ok: from umoci's layer"),
        "{}",
        reply.body
    );
    drop(run);
    // berth's own image is still there and runs.
    let run = BerthRun::start_in(home.path(), "app:1", &[]);
    assert_eq!(get(&run.url).await.status, 200);
}

#[tokio::test]
async fn tag_inspect_rmi_and_prune_manage_the_store() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(
        &[("static/hello.txt", "hi")],
        "[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    );
    let digest = build(home.path(), app.path(), "app:1");
    assert!(berth(home.path(), &["tag", "app:1", "other/app:2"]).success);

    let inspected = berth(home.path(), &["inspect", "other/app:2"]);
    assert!(inspected.success, "{}", inspected.stderr);
    let json: serde_json::Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(json["digest"], digest.as_str());
    // Plain tar layers at /, the files under their mount path, then the
    // component as a file the entrypoint names: what containerd runs too.
    assert_eq!(json["layers"][0]["kind"], "bundle");
    assert_eq!(json["layers"][0]["mount"], "/");
    assert_eq!(json["layers"][1]["kind"], "bundle");
    assert_eq!(json["entrypoint"], "/echo.wasm");
    assert_eq!(json["config"]["os"], "wasip2");
    assert_eq!(
        json["config"]["rootfs"]["diff_ids"][1],
        json["layers"][1]["digest"]
    );
    let exports = json["config"]["config"]["Labels"]["dev.berth.component.exports"]
        .as_str()
        .unwrap();
    assert!(
        exports
            .split(',')
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2")),
        "{json}"
    );

    // Running unpacks the image; removing one of two names frees nothing.
    let run = BerthRun::start_in(home.path(), "other/app:2", &[]);
    assert_eq!(get(&format!("{}/", run.url)).await.status, 200);
    drop(run);
    let blobs = home.path().join("store/blobs/sha256");
    let count = |dir: &Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let before = count(&blobs);
    let out = berth(home.path(), &["rmi", "app:1"]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("deleted 0 blobs"), "{}", out.stdout);
    assert_eq!(count(&blobs), before);
    assert!(
        berth(home.path(), &["run", "app:1", "--listen", "127.0.0.1:0"])
            .stderr
            .contains("no image app:1")
    );

    // Removing the last name frees the blobs and the unpacked image.
    let out = berth(home.path(), &["rmi", "other/app:2"]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("deleted {before} blobs")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("1 unpacked images and 1 unpacked trees"),
        "{}",
        out.stdout
    );
    assert_eq!(count(&blobs), 0);
    assert_eq!(count(&home.path().join("images/manifests")), 0);
    assert_eq!(count(&home.path().join("images/trees")), 0);

    let out = berth(home.path(), &["rmi", "gone:1"]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("no image named gone:1"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn save_and_load_round_trip_through_an_oci_archive() {
    let home = tempfile::tempdir().unwrap();
    let app = app_dir(
        &[("static/hello.txt", "from the archive")],
        "[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    );
    let digest = build(home.path(), app.path(), "app:1");
    let archive = home.path().join("app.tar");
    let out = berth(
        home.path(),
        &["save", "app:1", "-o", archive.to_str().unwrap()],
    );
    assert!(out.success, "{}", out.stderr);

    // skopeo reads it as an OCI archive.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert!(
        raw.contains("application/vnd.oci.image.config.v1+json"),
        "{raw}"
    );

    // Into an empty home, then run.
    let other = tempfile::tempdir().unwrap();
    let out = berth(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout, "loaded app:1\n");
    let inspected = berth(other.path(), &["inspect", "app:1"]);
    assert!(inspected.stdout.contains(&digest), "{}", inspected.stdout);
    let run = BerthRun::start_in(other.path(), "app:1", &[]);
    let reply = get(&format!("{}/?read=/static/hello.txt", run.url)).await;
    assert!(
        reply.body.contains("ok: from the archive"),
        "{}",
        reply.body
    );

    // A tampered archive loads nothing and names the bad entry.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == b"from the archive")
        .unwrap();
    bytes[at] = b'F';
    let tampered = home.path().join("tampered.tar");
    std::fs::write(&tampered, bytes).unwrap();
    let third = tempfile::tempdir().unwrap();
    let out = berth(third.path(), &["load", "-i", tampered.to_str().unwrap()]);
    assert!(!out.success);
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);
    assert!(out.stderr.contains("blobs/sha256/"), "{}", out.stderr);
    let listing = berth(third.path(), &["images"]);
    assert!(!listing.stdout.contains("app:1"), "{}", listing.stdout);

    // An archive that names no image loads nothing, and says so.
    let nameless = home.path().join("nameless.tar");
    let mut rewritten = tar::Builder::new(Vec::new());
    let mut original = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in original.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if path.to_str() == Some("index.json") {
            let mut index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for manifest in index["manifests"].as_array_mut().unwrap() {
                manifest.as_object_mut().unwrap().remove("annotations");
            }
            bytes = serde_json::to_vec(&index).unwrap();
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        rewritten
            .append_data(&mut header, &path, &bytes[..])
            .unwrap();
    }
    std::fs::write(&nameless, rewritten.into_inner().unwrap()).unwrap();
    let fourth = tempfile::tempdir().unwrap();
    let out = berth(fourth.path(), &["load", "-i", nameless.to_str().unwrap()]);
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stderr.contains("names no image"), "{}", out.stderr);

    // A reader that stops reading ends `inspect` quietly, as with any
    // Unix tool: no panic on the broken pipe.
    let mut inspect = std::process::Command::new(berth_tests::berth_bin())
        .args(["inspect", "app:1"])
        .env("BERTH_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(inspect.stdout.take());
    let ended = inspect.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&ended.stderr);
    assert!(!said.contains("panicked"), "{said}");
    use std::os::unix::process::ExitStatusExt as _;
    assert!(
        ended.status.success() || ended.status.signal() == Some(SIGPIPE),
        "{:?}: {said}",
        ended.status
    );
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;
