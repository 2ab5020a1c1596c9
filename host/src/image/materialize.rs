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

use super::model::{Compression, Image, ImageError, Layer};
use super::unpack::{UnpackLimits, apply_layer};

/// An image ready to run.
#[derive(Debug)]
pub struct Materialized {
    pub component: PathBuf,
    /// (host directory, guest mount path), lowest mount first.
    pub mounts: Vec<(PathBuf, String)>,
}

const MOUNTS_FILE: &str = "mounts.json";

pub fn materialize(
    store: &ContentStore,
    images_dir: &Path,
    image: &Image,
) -> Result<Materialized, ImageError> {
    let entrypoint = image.entrypoint().ok_or_else(|| {
        ImageError::Invalid(format!(
            "image {} has no component layer",
            image.manifest_digest
        ))
    })?;
    let component_digest = entrypoint.digest().to_string();
    store.verify(&component_digest)?;
    let component = store.blob_path(&component_digest)?;

    let hex = image.manifest_digest.trim_start_matches("sha256:");
    let target = images_dir.join(hex);
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
                Compression::Gzip => Box::new(flate2::read::GzDecoder::new(blob)),
                Compression::Zstd => Box::new(zstd::Decoder::new(blob)?),
            })
        };
        apply_layer(&root, open, UnpackLimits::default()).map_err(|e| ImageError::Layer {
            digest: digest.clone(),
            reason: e.to_string(),
        })?;
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
}
