//! Turning an image into what a guest sees: its entrypoint component and one
//! read-only directory per bundle mount path.
//!
//! Done once per image digest and shared by every replica: bundles are
//! unpacked into a temporary directory that is renamed into place only when
//! complete, so a crash or a refused layer never leaves a half image that
//! later runs would use. Every blob is verified against its digest first.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_registry::ContentStore;
use cap_std::fs::Dir;

use super::model::{Compression, Entrypoint, Image, ImageError, Layer};
use super::unpack::{UnpackLimits, apply_layer};

/// An image ready to run.
#[derive(Debug)]
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

    let hex = image.manifest_digest.trim_start_matches("sha256:");
    let target = images_dir.join(hex);
    let component = match entrypoint {
        Entrypoint::Layer(d) => {
            let digest = d.digest().to_string();
            store.verify(&digest)?;
            store.blob_path(&digest)?
        }
        Entrypoint::File(_) => target.join(ENTRYPOINT_FILE),
    };
    if !target.join(MOUNTS_FILE).is_file() {
        unpack_into(store, images_dir, &target, image)?;
    }
    let mounts_path = target.join(MOUNTS_FILE);
    let listed: Vec<(String, String)> = std::fs::read(&mounts_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ImageError::Invalid(format!("{} is unreadable", mounts_path.display())))?;
    let mounts = listed
        .into_iter()
        .map(|(dir, mount)| (target.join(dir), mount))
        .collect();
    Ok(Materialized { component, mounts })
}

fn unpack_into(
    store: &ContentStore,
    images_dir: &Path,
    target: &Path,
    image: &Image,
) -> Result<(), ImageError> {
    let io_error =
        |path: &Path, e: std::io::Error| ImageError::Invalid(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(images_dir).map_err(|e| io_error(images_dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(images_dir)
        .map_err(|e| io_error(images_dir, e))?;

    let mut mounts: Vec<(String, String)> = Vec::new();
    for layer in &image.layers {
        let Layer::Bundle {
            descriptor,
            compression,
            mount,
        } = layer
        else {
            continue;
        };
        let dir_name = match mounts.iter().find(|(_, m)| m == mount) {
            Some((dir, _)) => dir.clone(),
            None => {
                let dir = format!("m{}", mounts.len());
                mounts.push((dir.clone(), mount.clone()));
                dir
            }
        };
        let dir_path = tmp.path().join(&dir_name);
        std::fs::create_dir_all(&dir_path).map_err(|e| io_error(&dir_path, e))?;
        let root = Dir::open_ambient_dir(&dir_path, cap_std::ambient_authority())
            .map_err(|e| io_error(&dir_path, e))?;

        let digest = descriptor.digest().to_string();
        store.verify(&digest)?;
        let open = || -> std::io::Result<Box<dyn Read>> {
            let blob = store
                .open_blob(&digest)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
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
    if let Some(Entrypoint::File(path)) = image.entrypoint() {
        copy_entrypoint(tmp.path(), &mounts, path)?;
    }
    let listing = serde_json::to_vec(&mounts).expect("JSON");
    let mounts_path = tmp.path().join(MOUNTS_FILE);
    std::fs::write(&mounts_path, listing).map_err(|e| io_error(&mounts_path, e))?;

    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, target) {
        // Another process finished the same image first: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
        if !target.join(MOUNTS_FILE).is_file() {
            return Err(io_error(target, e));
        }
    }
    Ok(())
}

/// Copies the component at guest path `path` out of the unpacked mounts.
/// It is opened through cap-std from the mount's root, so a symlink in the
/// image cannot make berth read a host file as the component.
fn copy_entrypoint(
    unpacked: &Path,
    mounts: &[(String, String)],
    path: &str,
) -> Result<(), ImageError> {
    let within = |mount: &str| {
        let rest = path.strip_prefix(mount.trim_end_matches('/'))?;
        (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/'))
    };
    let (dir, relative) = mounts
        .iter()
        .filter_map(|(dir, mount)| within(mount).map(|rel| (dir, mount.len(), rel)))
        .max_by_key(|(_, len, _)| *len)
        .map(|(dir, _, rel)| (dir, rel))
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "the entrypoint {path} is not inside any of the image's layers"
            ))
        })?;
    let missing = |e: std::io::Error| {
        ImageError::Invalid(format!("the entrypoint {path} is not in the image: {e}"))
    };
    let root =
        Dir::open_ambient_dir(unpacked.join(dir), cap_std::ambient_authority()).map_err(missing)?;
    let mut source = root.open(relative).map_err(missing)?;
    let destination = unpacked.join(ENTRYPOINT_FILE);
    let mut out = std::fs::File::create(&destination)
        .map_err(|e| ImageError::Invalid(format!("{}: {e}", destination.display())))?;
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
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, content.as_bytes())
            .unwrap();
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
}
