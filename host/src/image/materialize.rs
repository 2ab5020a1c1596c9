//! Turning an image into what a guest sees: its entrypoint component and one
//! read-only directory per bundle mount path.
//!
//! The layers stacked at one mount path are unpacked together into a tree
//! named by that list of layer digests (`trees/<key>`), so images built on
//! the same base share one unpacked copy of it on disk, as they share its
//! blobs in the store. Each image then has a small directory of its own
//! (`manifests/<hex>`) listing its trees and holding its component when that
//! is a file inside the image. Both are made in a temporary directory and
//! renamed into place only when complete, so a crash or a refused layer never
//! leaves a half tree that later runs would use. Every blob is verified
//! against its digest first.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_registry::ContentStore;
use berth_registry::oci::Descriptor;
use cap_std::fs::Dir;
use sha2::{Digest as _, Sha256};

use super::model::{Compression, Entrypoint, Image, ImageError, Layer};
use super::unpack::{UnpackLimits, apply_layer};

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Materialized {
    pub component: PathBuf,
    /// (host directory, guest mount path), lowest mount first.
    pub mounts: Vec<(PathBuf, String)>,
}

const MOUNTS_FILE: &str = "mounts.json";
/// Where a component that lives in the image's filesystem is copied to, so
/// it is read from berth's own directory rather than through the image's
/// symlinks.
const ENTRYPOINT_FILE: &str = "entrypoint.wasm";
const MANIFESTS: &str = "manifests";
const TREES: &str = "trees";
/// Part of every tree key, so a change to how layers are applied never
/// reuses trees unpacked the old way.
const TREE_FORMAT: &str = "berth-tree-v1";
/// What a Linux container mounts over at every start. Its image's root tree
/// gets them at unpack where the layers lack them (most do), as Docker's
/// init layer does, or each container would make them in its writable
/// layer: three directories made and removed per start, on the disk.
const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "sys"];

fn io_error(path: &Path, e: std::io::Error) -> ImageError {
    ImageError::Invalid(format!("{}: {e}", path.display()))
}

pub fn materialize(
    store: &ContentStore,
    images_dir: &Path,
    image: &Image,
) -> Result<Materialized, ImageError> {
    let entrypoint = image.entrypoint().ok_or_else(|| {
        ImageError::Invalid(if image.platform.is_wasm() {
            format!(
                "image {} has no component: no application/wasm layer and no entrypoint in its config",
                image.manifest_digest
            )
        } else {
            format!(
                "image {} is for {}, not wasm: it has no component to run",
                image.manifest_digest, image.platform
            )
        })
    })?;

    let image_dir = images_dir
        .join(MANIFESTS)
        .join(image.manifest_digest.trim_start_matches("sha256:"));
    let component = match entrypoint {
        Entrypoint::Layer(d) => {
            let digest = d.digest().to_string();
            store.verify(&digest)?;
            store.blob_path(&digest)?
        }
        Entrypoint::File(_) => image_dir.join(ENTRYPOINT_FILE),
    };
    if !image_dir.join(MOUNTS_FILE).is_file() {
        prepare(store, images_dir, &image_dir, image, &[])?;
    }
    let mounts = read_mounts(&image_dir)?
        .into_iter()
        .map(|(tree, mount)| (images_dir.join(TREES).join(tree), mount))
        .collect();
    Ok(Materialized { component, mounts })
}

/// A Linux image's root filesystem: its layers unpacked in order, once per
/// set of layers, shared read-only by every container of the image.
pub fn materialize_rootfs(
    store: &ContentStore,
    images_dir: &Path,
    image: &Image,
) -> Result<PathBuf, ImageError> {
    if image.platform.os != "linux" {
        return Err(ImageError::Invalid(format!(
            "image {} is for {}, not linux",
            image.manifest_digest, image.platform
        )));
    }
    if let Some(Layer::Component(d)) = image
        .layers
        .iter()
        .find(|l| matches!(l, Layer::Component(_)))
    {
        return Err(ImageError::Layer {
            digest: d.digest().to_string(),
            reason: "a wasm component in a linux image".into(),
        });
    }
    // Listed like a wasm image's bundles, so prune keeps the tree while
    // the image is tagged.
    let image_dir = images_dir
        .join(MANIFESTS)
        .join(image.manifest_digest.trim_start_matches("sha256:"));
    if !image_dir.join(MOUNTS_FILE).is_file() {
        prepare(store, images_dir, &image_dir, image, &MOUNT_POINTS)?;
    }
    match read_mounts(&image_dir)?.into_iter().find(|(_, m)| m == "/") {
        Some((key, _)) => Ok(images_dir.join(TREES).join(key)),
        // No layers at all: an empty root.
        None => {
            let empty = image_dir.join("empty-root");
            std::fs::create_dir_all(&empty).map_err(|e| io_error(&empty, e))?;
            Ok(empty)
        }
    }
}

/// The (tree key, mount path) pairs an image directory lists.
fn read_mounts(image_dir: &Path) -> Result<Vec<(String, String)>, ImageError> {
    let path = image_dir.join(MOUNTS_FILE);
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ImageError::Invalid(format!("{} is unreadable", path.display())))
}

/// The bundle layers of each mount path, in the order mounts first appear.
fn layers_by_mount(image: &Image) -> Vec<(String, Vec<(&Descriptor, Compression)>)> {
    let mut by_mount: Vec<(String, Vec<(&Descriptor, Compression)>)> = Vec::new();
    for layer in &image.layers {
        if let Layer::Bundle {
            descriptor,
            compression,
            mount,
        } = layer
        {
            match by_mount.iter_mut().find(|(m, _)| m == mount) {
                Some((_, layers)) => layers.push((descriptor, *compression)),
                None => by_mount.push((mount.clone(), vec![(descriptor, *compression)])),
            }
        }
    }
    by_mount
}

fn tree_key(layers: &[(&Descriptor, Compression)], made: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(TREE_FORMAT);
    for (d, _) in layers {
        hasher.update(b"\n");
        hasher.update(d.digest().to_string());
    }
    // A root with directories added is not the same tree as the layers'.
    for dir in made {
        hasher.update(b"\n+");
        hasher.update(dir);
    }
    hex::encode(hasher.finalize())
}

/// Unpacks the image's trees and lists them in `image_dir`; `mount_points`
/// are directories its root tree must have.
fn prepare(
    store: &ContentStore,
    images_dir: &Path,
    image_dir: &Path,
    image: &Image,
    mount_points: &[&str],
) -> Result<(), ImageError> {
    let trees = images_dir.join(TREES);
    let mut mounts: Vec<(String, String)> = Vec::new();
    for (mount, layers) in layers_by_mount(image) {
        let made = if mount == "/" { mount_points } else { &[] };
        let key = tree_key(&layers, made);
        let tree = trees.join(&key);
        if !tree.is_dir() {
            unpack_tree(store, &trees, &tree, &layers, made)?;
        }
        mounts.push((key, mount));
    }

    let manifests = images_dir.join(MANIFESTS);
    std::fs::create_dir_all(&manifests).map_err(|e| io_error(&manifests, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".prepare-")
        .tempdir_in(&manifests)
        .map_err(|e| io_error(&manifests, e))?;
    if let Some(Entrypoint::File(path)) = image.entrypoint() {
        let in_trees: Vec<(PathBuf, String)> = mounts
            .iter()
            .map(|(key, mount)| (trees.join(key), mount.clone()))
            .collect();
        copy_entrypoint(&in_trees, path, &tmp.path().join(ENTRYPOINT_FILE))?;
    }
    let listing = serde_json::to_vec(&mounts).expect("JSON");
    let mounts_path = tmp.path().join(MOUNTS_FILE);
    std::fs::write(&mounts_path, listing).map_err(|e| io_error(&mounts_path, e))?;
    rename_into_place(tmp, image_dir, &image_dir.join(MOUNTS_FILE))
}

/// Applies `layers`, lowest first, into a new tree at `tree`, then makes
/// the directories of `made` the layers did not.
fn unpack_tree(
    store: &ContentStore,
    trees: &Path,
    tree: &Path,
    layers: &[(&Descriptor, Compression)],
    made: &[&str],
) -> Result<(), ImageError> {
    std::fs::create_dir_all(trees).map_err(|e| io_error(trees, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(trees)
        .map_err(|e| io_error(trees, e))?;
    let root = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority())
        .map_err(|e| io_error(tmp.path(), e))?;
    for (descriptor, compression) in layers {
        let digest = descriptor.digest().to_string();
        // Verified once here; the two passes below then read the file
        // directly, buffered, as tar reads headers 512 bytes at a time.
        store.verify(&digest)?;
        let path = store.blob_path(&digest)?;
        let open = || -> std::io::Result<Box<dyn Read>> {
            let blob = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(&path)?);
            Ok(match compression {
                Compression::None => Box::new(blob),
                // Parallel compressors (pgzip in umoci, pigz) write many
                // gzip members; a single-member decoder would stop early.
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
                Compression::Zstd => Box::new(zstd::Decoder::new(blob)?),
            })
        };
        apply_layer(&root, open, UnpackLimits::default()).map_err(|e| ImageError::Layer {
            digest: digest.clone(),
            reason: e.to_string(),
        })?;
    }
    let mut builder = cap_std::fs::DirBuilder::new();
    cap_std::fs::DirBuilderExt::mode(&mut builder, 0o755);
    for dir in made {
        // Whatever a layer put there (even a file) stays: the container's
        // init reports what it cannot mount over.
        if let Err(e) = root.create_dir_with(dir, &builder)
            && root.symlink_metadata(dir).is_err()
        {
            return Err(io_error(&tmp.path().join(dir), e));
        }
    }
    rename_into_place(tmp, tree, tree)
}

/// Renames a finished temporary directory to `target`. If another process
/// finished the same one first (`done` exists), theirs is kept.
fn rename_into_place(tmp: tempfile::TempDir, target: &Path, done: &Path) -> Result<(), ImageError> {
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !done.exists() {
            return Err(io_error(target, e));
        }
    }
    Ok(())
}

/// What `berth image prune` and `berth rmi` removed from the images dir.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub images: usize,
    pub trees: usize,
}

/// Removes the prepared images whose manifest is not in `keep` (digests),
/// then every tree no remaining image lists. Temporary directories (dot
/// names) belong to whoever is writing them and are left alone.
pub fn clean(images_dir: &Path, keep: &BTreeSet<String>) -> Result<Cleaned, ImageError> {
    let mut cleaned = Cleaned::default();
    let remove = |path: &Path| std::fs::remove_dir_all(path).map_err(|e| io_error(path, e));
    let entries = |dir: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(name, _)| !name.starts_with('.'))
            .collect()
    };
    let mut used_trees = BTreeSet::new();
    for (name, path) in entries(&images_dir.join(MANIFESTS)) {
        if keep.contains(&format!("sha256:{name}"))
            && let Ok(mounts) = read_mounts(&path)
        {
            used_trees.extend(mounts.into_iter().map(|(key, _)| key));
            continue;
        }
        remove(&path)?;
        cleaned.images += 1;
    }
    for (name, path) in entries(&images_dir.join(TREES)) {
        if !used_trees.contains(&name) {
            remove(&path)?;
            cleaned.trees += 1;
        }
    }
    Ok(cleaned)
}

/// Copies the component at guest path `path` out of the unpacked `mounts`
/// (tree, mount path) to `destination`. It is opened through cap-std from the
/// tree's root, so a symlink in the image cannot make berth read a host file
/// as the component.
fn copy_entrypoint(
    mounts: &[(PathBuf, String)],
    path: &str,
    destination: &Path,
) -> Result<(), ImageError> {
    let within = |mount: &str| {
        let rest = path.strip_prefix(mount.trim_end_matches('/'))?;
        (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/'))
    };
    let (tree, relative) = mounts
        .iter()
        .filter_map(|(tree, mount)| within(mount).map(|rel| (tree, mount.len(), rel)))
        .max_by_key(|(_, len, _)| *len)
        .map(|(tree, _, rel)| (tree, rel))
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "the entrypoint {path} is not inside any of the image's layers"
            ))
        })?;
    let missing = |e: std::io::Error| {
        ImageError::Invalid(format!("the entrypoint {path} is not in the image: {e}"))
    };
    let root = Dir::open_ambient_dir(tree, cap_std::ambient_authority()).map_err(missing)?;
    let mut source = root.open(relative).map_err(missing)?;
    let mut out = std::fs::File::create(destination).map_err(|e| io_error(destination, e))?;
    std::io::copy(&mut source, &mut out).map_err(missing)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::model::{MOUNT_ANNOTATION, WASM_CONFIG, WASM_LAYER};
    use berth_registry::oci::{ImageManifestBuilder, MediaType};
    use std::collections::HashMap;
    use std::io::Write;

    fn tar_with(name: &str, content: &str) -> Vec<u8> {
        tar_of(&[(name, content)])
    }

    /// A tar of regular files, (path, content) each.
    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, content.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn bundle(
        store: &ContentStore,
        media_type: MediaType,
        bytes: &[u8],
        mount: &str,
    ) -> berth_registry::oci::Descriptor {
        let mut d = store.write_bytes(media_type, bytes).unwrap();
        d.set_annotations(Some(HashMap::from([(
            MOUNT_ANNOTATION.to_owned(),
            mount.to_owned(),
        )])));
        d
    }

    #[test]
    fn gzip_and_zstd_bundles_are_unpacked_at_their_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar_with("g.txt", "gzip layer")).unwrap();
        let gz = bundle(
            &store,
            MediaType::ImageLayerGzip,
            &gz.finish().unwrap(),
            "/g",
        );
        let zst = zstd::encode_all(&tar_with("z.txt", "zstd layer")[..], 3).unwrap();
        let zst = bundle(&store, MediaType::ImageLayerZstd, &zst, "/z");
        let component = store
            .write_bytes(MediaType::Other(WASM_LAYER.into()), b"\0asm\x0d\0\x01\0")
            .unwrap();
        let config = store
            .write_bytes(MediaType::Other(WASM_CONFIG.into()), b"{}")
            .unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(vec![gz, zst, component.clone()])
            .build()
            .unwrap();
        let manifest = store
            .write_bytes(
                MediaType::ImageManifest,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .unwrap();

        let image = Image::load(&store, manifest.digest().as_ref()).unwrap();
        let ready = materialize(&store, &dir.path().join("images"), &image).unwrap();
        assert_eq!(
            ready.component,
            store.blob_path(component.digest().as_ref()).unwrap()
        );
        let mounts: Vec<&str> = ready.mounts.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(mounts, ["/g", "/z"]);
        assert_eq!(
            std::fs::read_to_string(ready.mounts[0].0.join("g.txt")).unwrap(),
            "gzip layer"
        );
        assert_eq!(
            std::fs::read_to_string(ready.mounts[1].0.join("z.txt")).unwrap(),
            "zstd layer"
        );

        // A second materialisation reuses the unpacked image.
        let again = materialize(&store, &dir.path().join("images"), &image).unwrap();
        assert_eq!(again.mounts, ready.mounts);
    }

    /// Writes an OCI image with `config` and the given tar layers; returns
    /// the manifest descriptor.
    fn oci_image(
        store: &ContentStore,
        config: serde_json::Value,
        layers: &[Vec<u8>],
    ) -> berth_registry::oci::Descriptor {
        let config = store
            .write_bytes(
                MediaType::ImageConfig,
                &serde_json::to_vec(&config).unwrap(),
            )
            .unwrap();
        let layers = layers
            .iter()
            .map(|l| store.write_bytes(MediaType::ImageLayer, l).unwrap())
            .collect::<Vec<_>>();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .unwrap();
        store
            .write_bytes(
                MediaType::ImageManifest,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .unwrap()
    }

    fn symlink_tar(name: &str, target: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        builder.append_link(&mut header, name, target).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn docker_style_wasm_images_run_the_component_their_config_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let config = serde_json::json!({
            "os": "wasip1", "architecture": "wasm",
            "config": {"Entrypoint": ["/app/server.wasm"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let manifest = oci_image(
            &store,
            config,
            &[
                tar_with("app/server.wasm", "\0asm component bytes"),
                tar_with("etc/motd", "hello"),
            ],
        );
        let image = Image::resolve(&store, &manifest).unwrap();
        assert!(image.platform.is_wasm());
        assert_eq!(
            image.entrypoint(),
            Some(&Entrypoint::File("/app/server.wasm".into()))
        );
        let ready = materialize(&store, &dir.path().join("images"), &image).unwrap();
        assert_eq!(
            std::fs::read_to_string(&ready.component).unwrap(),
            "\0asm component bytes"
        );
        assert_eq!(ready.mounts.len(), 1);
        assert_eq!(ready.mounts[0].1, "/");
        assert_eq!(
            std::fs::read_to_string(ready.mounts[0].0.join("etc/motd")).unwrap(),
            "hello"
        );
    }

    #[test]
    fn an_entrypoint_symlinked_out_of_the_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.wasm");
        std::fs::write(&secret, "host file").unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let config = serde_json::json!({
            "os": "wasip2", "architecture": "wasm",
            "config": {"Entrypoint": ["/app.wasm"]},
        });
        let manifest = oci_image(
            &store,
            config,
            &[symlink_tar("app.wasm", secret.to_str().unwrap())],
        );
        let image = Image::resolve(&store, &manifest).unwrap();
        let err = materialize(&store, &dir.path().join("images"), &image).unwrap_err();
        assert!(
            err.to_string().contains("the entrypoint /app.wasm"),
            "{err}"
        );
    }

    #[test]
    fn an_index_resolves_to_its_wasm_manifest_and_linux_images_do_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let linux = oci_image(
            &store,
            serde_json::json!({"os": "linux", "architecture": "amd64",
                "config": {"Entrypoint": ["/bin/sh"]}}),
            &[tar_with("bin/sh", "ELF")],
        );
        let wasm = oci_image(
            &store,
            serde_json::json!({"os": "wasip2", "architecture": "wasm",
                "config": {"Cmd": ["/app.wasm"]}}),
            &[tar_with("app.wasm", "\0asm")],
        );
        let platform = |d: &berth_registry::oci::Descriptor, os: &str, arch: &str| {
            let mut d = d.clone();
            d.set_platform(Some(
                serde_json::from_value(serde_json::json!({"os": os, "architecture": arch}))
                    .unwrap(),
            ));
            d
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [platform(&linux, "linux", "amd64"), platform(&wasm, "wasip2", "wasm")],
        });
        let index = store
            .write_bytes(MediaType::ImageIndex, &serde_json::to_vec(&index).unwrap())
            .unwrap();

        let image = Image::resolve(&store, &index).unwrap();
        assert_eq!(image.manifest_digest, wasm.digest().to_string());

        let linux_image = Image::resolve(&store, &linux).unwrap();
        assert_eq!(linux_image.platform.to_string(), "linux/amd64");
        assert_eq!(linux_image.entrypoint(), None);
        let err = materialize(&store, &dir.path().join("images"), &linux_image).unwrap_err();
        assert!(
            err.to_string().contains("is for linux/amd64, not wasm"),
            "{err}"
        );

        let arm_only = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [platform(&linux, "linux", "arm64")],
        });
        let arm_only = store
            .write_bytes(
                MediaType::ImageIndex,
                &serde_json::to_vec(&arm_only).unwrap(),
            )
            .unwrap();
        let err = Image::resolve(&store, &arm_only).unwrap_err();
        assert!(err.to_string().contains("it offers: linux/arm64"), "{err}");
    }

    #[test]
    fn a_linux_root_has_its_mount_points_and_keeps_what_its_layers_put_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let images = dir.path().join("images");
        // /dev as a file: the layer's, not replaced by a directory.
        let layer = tar_of(&[("bin/sh", "ELF"), ("dev", "not a dir")]);
        let linux = oci_image(
            &store,
            serde_json::json!({"os": "linux", "architecture": "amd64",
                "config": {"Entrypoint": ["/bin/sh"]}}),
            &[layer],
        );
        let image = Image::resolve(&store, &linux).unwrap();
        let root = materialize_rootfs(&store, &images, &image).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for made in ["proc", "sys"] {
            let meta = std::fs::metadata(root.join(made)).unwrap();
            assert!(meta.is_dir(), "{made}");
            assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{made}");
        }
        assert_eq!(
            std::fs::read_to_string(root.join("dev")).unwrap(),
            "not a dir"
        );
        assert_eq!(std::fs::read_to_string(root.join("bin/sh")).unwrap(), "ELF");
        // The same layers unpacked for a wasm bundle are a tree of their own,
        // without the added directories.
        let (mount, layers) = &layers_by_mount(&image)[0];
        assert_eq!(mount, "/");
        assert_ne!(images.join(TREES).join(tree_key(layers, &[])), root);
    }

    /// A wasm manifest of `layers` (bundles at their mounts, then a component).
    fn wasm_image(
        store: &ContentStore,
        layers: Vec<berth_registry::oci::Descriptor>,
    ) -> berth_registry::oci::Descriptor {
        let component = store
            .write_bytes(MediaType::Other(WASM_LAYER.into()), b"\0asm\x0d\0\x01\0")
            .unwrap();
        let config = store
            .write_bytes(MediaType::Other(WASM_CONFIG.into()), b"{}")
            .unwrap();
        let mut layers = layers;
        layers.push(component);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .unwrap();
        store
            .write_bytes(
                MediaType::ImageManifest,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .unwrap()
    }

    #[test]
    fn images_on_one_base_share_its_unpacked_tree_until_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let images_dir = dir.path().join("images");
        let base = bundle(&store, MediaType::ImageLayer, &tar_with("os", "base"), "/");
        let app = |n: &str| {
            let files = bundle(&store, MediaType::ImageLayer, &tar_with("app", n), "/app");
            wasm_image(&store, vec![base.clone(), files])
        };
        let (one, two) = (app("one"), app("two"));
        let trees_dir = images_dir.join(TREES);
        let ready: Vec<Materialized> = [&one, &two]
            .iter()
            .map(|m| {
                let image = Image::resolve(&store, m).unwrap();
                materialize(&store, &images_dir, &image).unwrap()
            })
            .collect();
        assert_eq!(ready[0].mounts[0], ready[1].mounts[0], "one base tree");
        assert_ne!(ready[0].mounts[1], ready[1].mounts[1]);
        assert_eq!(std::fs::read_dir(&trees_dir).unwrap().count(), 3);
        assert_eq!(
            std::fs::read_to_string(ready[1].mounts[1].0.join("app")).unwrap(),
            "two"
        );

        // Keeping only the first image frees the second's own tree, not the base.
        let keep = BTreeSet::from([one.digest().to_string()]);
        let cleaned = clean(&images_dir, &keep).unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                images: 1,
                trees: 1
            }
        );
        assert!(ready[0].mounts[0].0.is_dir() && ready[0].mounts[1].0.is_dir());
        assert!(!ready[1].mounts[1].0.exists());
        let cleaned = clean(&images_dir, &BTreeSet::new()).unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                images: 1,
                trees: 2
            }
        );
    }
}
