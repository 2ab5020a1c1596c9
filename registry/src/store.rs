//! The content store: an OCI image layout on disk.
//!
//! Blobs are immutable and named by their sha256. A write streams into a
//! temporary file under `.tmp/` while hashing, is fsynced, and is renamed to
//! `blobs/sha256/<hex>` only if the digest is what the caller expected; a
//! blob already present is not written twice, so layers shared by several
//! images are stored once. Reads hash again and fail on a mismatch.
//!
//! Tags live in `index.json` as descriptors annotated with
//! `org.opencontainers.image.ref.name` = `repository:tag`, which is also how
//! skopeo names them (`oci:<store>:<repository>:<tag>`). Index updates take
//! an exclusive lock on `.lock` and replace the file atomically.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType, OciLayout,
};

use crate::error::{StoreError, io};
use crate::media;

/// The annotation naming a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// What `prune` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub bytes: u64,
}

impl ContentStore {
    /// Opens the layout at `root`, creating an empty one if there is none.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let store = ContentStore { root };
        fs::create_dir_all(store.blobs_dir()).map_err(io(store.blobs_dir()))?;
        fs::create_dir_all(store.tmp_dir()).map_err(io(store.tmp_dir()))?;
        let layout = store.root.join("oci-layout");
        if layout.exists() {
            let parsed = OciLayout::from_file(&layout).map_err(|e| StoreError::Invalid {
                path: layout.clone(),
                reason: e.to_string(),
            })?;
            if parsed.image_layout_version() != "1.0.0" {
                return Err(StoreError::Invalid {
                    path: layout,
                    reason: format!(
                        "unsupported imageLayoutVersion {}",
                        parsed.image_layout_version()
                    ),
                });
            }
        } else {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.index_path();
        if !index.exists() {
            let empty = ImageIndexBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageIndex)
                .manifests(Vec::new())
                .build()
                .expect("an empty index is valid");
            store.write_index(&empty)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Where the blob `digest` lives (whether or not it exists):
    /// `blobs/<algorithm>/<hex>`, as the OCI layout has it.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let (algorithm, hex) = crate::names::split_digest(digest)
            .ok_or_else(|| StoreError::UnsupportedDigest(digest.to_owned()))?;
        Ok(self.root.join("blobs").join(algorithm).join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Streams `reader` into the store. With `expected`, the blob is kept only
    /// if it hashes to that digest. Returns the digest and size.
    pub fn write_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
    ) -> Result<(String, u64), StoreError> {
        let mut hasher = match expected {
            Some(expected) => {
                self.blob_path(expected)?;
                crate::names::Hasher::for_digest(expected).expect("checked by blob_path")
            }
            None => crate::names::Hasher::sha256(),
        };
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io(&tmp_dir))?;
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(tmp.path())(e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io(tmp.path()))?;
            size += n as u64;
        }
        let digest = hasher.digest();
        if let Some(expected) = expected
            && expected != digest
        {
            // Dropping `tmp` deletes it: nothing is visible under either digest.
            return Err(StoreError::DigestMismatch {
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        let path = self.blob_path(&digest)?;
        if path.is_file() {
            return Ok((digest, size));
        }
        let dir = path.parent().expect("blobs/<algorithm>");
        fs::create_dir_all(dir).map_err(io(dir))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
        sync_dir(dir)?;
        Ok((digest, size))
    }

    /// Stores `bytes` and returns a descriptor for them.
    pub fn write_bytes(
        &self,
        media_type: MediaType,
        bytes: &[u8],
    ) -> Result<Descriptor, StoreError> {
        let (digest, size) = self.write_blob(bytes, None)?;
        Ok(descriptor(media_type, &digest, size))
    }

    /// Opens a blob for streaming; the reader fails at the end if the content
    /// does not hash to `digest`.
    pub fn open_blob(&self, digest: &str) -> Result<BlobReader, StoreError> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobUnknown(digest.to_owned()),
            _ => io(&path)(e),
        })?;
        Ok(BlobReader {
            file,
            hasher: crate::names::Hasher::for_digest(digest).expect("checked by blob_path"),
            expected: digest.to_owned(),
            path,
            done: false,
        })
    }

    /// Reads a whole blob and checks it hashes to its digest.
    pub fn verify(&self, digest: &str) -> Result<(), StoreError> {
        let mut reader = self.open_blob(digest)?;
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| reader.error(e))?;
        Ok(())
    }

    /// Reads a whole (small) blob, verified.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| reader.error(e))?;
        Ok(bytes)
    }

    /// Reads and parses a JSON blob (manifest, index, config).
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T, StoreError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
            what: format!("blob {digest}"),
            reason: e.to_string(),
        })
    }

    pub fn index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Every tag in the store with its manifest descriptor, sorted by name.
    pub fn tags(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        let mut tags: Vec<_> = self
            .index()?
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|name| (name.to_owned(), d.clone())))
            .collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tags)
    }

    /// The manifest descriptor tagged `name` (`repository:tag`).
    pub fn resolve(&self, name: &str) -> Result<Descriptor, StoreError> {
        self.index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }

    /// Points `name` at `manifest` (whose blob must exist), replacing any
    /// earlier image of that name.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), StoreError> {
        if !self.has_blob(manifest.digest().as_ref()) {
            return Err(StoreError::BlobUnknown(manifest.digest().to_string()));
        }
        self.update_index(|manifests| {
            manifests.retain(|d| ref_name(d) != Some(name));
            let mut tagged = manifest.clone();
            let mut annotations = tagged.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME.to_owned(), name.to_owned());
            tagged.set_annotations(Some(annotations));
            manifests.push(tagged);
            Ok(())
        })
    }

    /// Removes the tag `name`; its blobs stay until `prune`.
    pub fn untag(&self, name: &str) -> Result<Descriptor, StoreError> {
        let mut removed = None;
        self.update_index(|manifests| {
            let at = manifests
                .iter()
                .position(|d| ref_name(d) == Some(name))
                .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
            removed = Some(manifests.remove(at));
            Ok(())
        })?;
        Ok(removed.expect("set when the update succeeded"))
    }

    /// Deletes every blob no tag reaches, and stale temporary files.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _lock = self.lock()?;
        let reachable = self.reachable(self.index()?.manifests().iter().cloned())?;
        let mut report = PruneReport::default();
        for algorithm in crate::names::ALGORITHMS {
            let dir = self.root.join("blobs").join(algorithm);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io(&dir))?;
                let digest = format!("{algorithm}:{}", entry.file_name().to_string_lossy());
                if reachable.contains(&digest) {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(io(entry.path()))?;
                report.blobs += 1;
                report.bytes += size;
            }
        }
        Ok(report)
    }

    /// Every digest `roots` reach through manifests and indexes, the roots
    /// included. Manifests and indexes are read (so must be present); the
    /// config and layer blobs they name are listed without being checked.
    pub fn reachable(
        &self,
        roots: impl IntoIterator<Item = Descriptor>,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut reachable = BTreeSet::new();
        let mut pending: Vec<Descriptor> = roots.into_iter().collect();
        while let Some(d) = pending.pop() {
            let digest = d.digest().to_string();
            if !reachable.insert(digest.clone()) {
                continue;
            }
            if media::is_manifest(d.media_type()) {
                let manifest: ImageManifest = self.read_json(&digest)?;
                reachable.insert(manifest.config().digest().to_string());
                for layer in manifest.layers() {
                    reachable.insert(layer.digest().to_string());
                }
            } else if media::is_index(d.media_type()) {
                let index: ImageIndex = self.read_json(&digest)?;
                pending.extend(index.manifests().iter().cloned());
            }
        }
        Ok(reachable)
    }

    fn update_index(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let mut manifests = index.manifests().clone();
        change(&mut manifests)?;
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).expect("an index serialises");
        self.write_atomic(&self.index_path(), &bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io(&tmp_dir))?;
        tmp.write_all(bytes).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(path).map_err(|e| io(path)(e.error))?;
        sync_dir(&self.root)
    }

    /// An exclusive lock over index changes, across processes.
    fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    }
}

/// A descriptor for content already in the store.
pub fn descriptor(media_type: MediaType, digest: &str, size: u64) -> Descriptor {
    let digest: oci_spec::image::Digest = digest.parse().expect("store digests are valid");
    Descriptor::new(media_type, size, digest)
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A blob being read; fails at the end if its content is not what its
/// digest says.
pub struct BlobReader {
    file: File,
    hasher: crate::names::Hasher,
    expected: String,
    path: PathBuf,
    done: bool,
}

impl BlobReader {
    /// Turns an I/O error from `read` back into the store error it carries.
    pub fn error(&self, e: io::Error) -> StoreError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<CorruptBlob>())
        {
            Some(c) => StoreError::Corrupt {
                digest: self.expected.clone(),
                actual: c.0.clone(),
                path: self.path.clone(),
            },
            None => io(&self.path)(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("blob content hashes to {0}")]
struct CorruptBlob(String);

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let actual = self.hasher.clone().digest();
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    CorruptBlob(actual),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn digest_of(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[test]
    fn a_new_store_is_an_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(dir.path().join("blobs/sha256").is_dir());
        let layout = fs::read_to_string(dir.path().join("oci-layout")).unwrap();
        assert!(layout.contains("\"imageLayoutVersion\":\"1.0.0\""));
        assert!(store.index().unwrap().manifests().is_empty());
        // Opening again keeps what is there.
        ContentStore::open(dir.path()).unwrap();
    }

    #[test]
    fn blobs_are_stored_once_under_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let (d1, size) = store.write_blob(&b"hello"[..], None).unwrap();
        assert_eq!(d1, digest_of(b"hello"));
        assert_eq!(size, 5);
        let (d2, _) = store.write_blob(&b"hello"[..], Some(&d1)).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(store.read_blob(&d1).unwrap(), b"hello");
    }

    #[test]
    fn a_mismatched_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let wrong = digest_of(b"something else");
        let err = store.write_blob(&b"hello"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wrong) && err.to_string().contains(&digest_of(b"hello")));
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(fs::read_dir(dir.path().join(".tmp")).unwrap().count(), 0);
    }

    #[test]
    fn corruption_on_disk_is_caught_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let (d, _) = store.write_blob(&b"precious layer"[..], None).unwrap();
        fs::write(store.blob_path(&d).unwrap(), b"tampered layer").unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn tags_point_at_manifests_and_prune_keeps_only_reachable_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let config = store.write_bytes(MediaType::ImageConfig, b"{}").unwrap();
        let layer = store.write_bytes(MediaType::ImageLayer, b"layer").unwrap();
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.clone())
            .layers(vec![layer.clone()])
            .build()
            .unwrap();
        let manifest = store
            .write_bytes(
                MediaType::ImageManifest,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .unwrap();
        let orphan = store.write_bytes(MediaType::ImageLayer, b"orphan").unwrap();

        store.tag("app:1", &manifest).unwrap();
        store.tag("app:latest", &manifest).unwrap();
        assert_eq!(store.resolve("app:1").unwrap().digest(), manifest.digest());
        let names: Vec<_> = store.tags().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["app:1", "app:latest"]);

        let report = store.prune().unwrap();
        assert_eq!(report, PruneReport { blobs: 1, bytes: 6 });
        assert!(!store.has_blob(orphan.digest().as_ref()));
        assert!(store.has_blob(layer.digest().as_ref()));

        store.untag("app:1").unwrap();
        store.untag("app:latest").unwrap();
        assert!(matches!(
            store.resolve("app:1"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.prune().unwrap().blobs, 3);
    }

    #[test]
    fn bad_digests_are_refused_not_joined_into_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        for bad in ["sha256:../../etc/passwd", "md5:00", "sha256:ABC"] {
            assert!(store.blob_path(bad).is_err(), "{bad}");
        }
    }
}
