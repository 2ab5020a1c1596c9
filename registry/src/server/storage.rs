//! The registry's disk: one content store for every repository's blobs and
//! manifests (so a layer pushed to ten repositories is stored once), plus
//! per-repository links saying what each repository holds.
//!
//! ```text
//! <root>/oci-layout, blobs/sha256/<hex>, .tmp/      the content store
//! <root>/repositories/<name>/_blobs/<hex>          blob links (empty files)
//! <root>/repositories/<name>/_manifests/<hex>      manifest links (the media type)
//! <root>/repositories/<name>/_tags/<tag>           the tagged manifest's digest
//! <root>/repositories/<name>/_referrers/<subject hex>/<hex>   referrer descriptors
//! <root>/uploads/<id>/data, repository             uploads in progress
//! ```
//!
//! Names, tags and digests are checked against the spec's grammar before
//! they get here (`crate::names`), so none can reach outside the root; the
//! `_` prefixes cannot collide with a name component, which must start with
//! a letter or digit. Every file that makes something visible is written to
//! a temporary file, fsynced and renamed, so after a crash a client sees
//! either all of a push it was told succeeded, or none of one it was not.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::store::ContentStore;

pub struct Storage {
    store: ContentStore,
    root: PathBuf,
}

/// The name a digest's links go by: its hex (of a length its algorithm
/// alone has, so sha256's and sha512's never meet).
fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

impl Storage {
    pub fn open(root: &Path) -> Result<Storage, crate::StoreError> {
        let store = ContentStore::open(root)?;
        for dir in ["repositories", "uploads"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(crate::error::io(&path))?;
        }
        Ok(Storage {
            store,
            root: root.to_owned(),
        })
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    pub fn repo_exists(&self, name: &str) -> bool {
        self.repo(name).join("_manifests").is_dir() || self.repo(name).join("_blobs").is_dir()
    }

    /// Creates or replaces `path` with `bytes`, durably.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().expect("a file under the root");
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join(".tmp"))?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        fs::File::open(dir)?.sync_all()
    }

    fn remove(path: &Path) -> io::Result<bool> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    // Blobs.

    /// The size of blob `digest` if repository `name` holds it.
    pub fn blob_size(&self, name: &str, digest: &str) -> Option<u64> {
        if !self
            .repo(name)
            .join("_blobs")
            .join(hex_of(digest))
            .is_file()
        {
            return None;
        }
        fs::metadata(self.store.blob_path(digest).ok()?)
            .ok()
            .map(|m| m.len())
    }

    pub fn blob_path(&self, digest: &str) -> io::Result<PathBuf> {
        self.store
            .blob_path(digest)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub fn link_blob(&self, name: &str, digest: &str) -> io::Result<()> {
        self.write_file(&self.repo(name).join("_blobs").join(hex_of(digest)), b"")
    }

    pub fn unlink_blob(&self, name: &str, digest: &str) -> io::Result<bool> {
        Self::remove(&self.repo(name).join("_blobs").join(hex_of(digest)))
    }

    // Uploads.

    pub fn new_upload(&self, name: &str) -> io::Result<String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
        let id = hex::encode(id);
        let dir = self.root.join("uploads").join(&id);
        fs::create_dir(&dir)?;
        fs::write(dir.join("repository"), name)?;
        fs::File::create(dir.join("data"))?;
        Ok(id)
    }

    /// The data file of upload `id`, if it exists and belongs to `name`.
    pub fn upload_data(&self, name: &str, id: &str) -> Option<PathBuf> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let dir = self.root.join("uploads").join(id);
        let owner = fs::read_to_string(dir.join("repository")).ok()?;
        (owner == name).then(|| dir.join("data"))
    }

    /// Deletes uploads nothing was written to for `max_age` (pushes that
    /// failed or were abandoned); returns the ids of those that went.
    pub fn sweep_uploads(&self, max_age: std::time::Duration) -> io::Result<Vec<String>> {
        let now = std::time::SystemTime::now();
        let mut swept = Vec::new();
        for entry in fs::read_dir(self.root.join("uploads"))? {
            let dir = entry?.path();
            // The data file changes with every chunk; a directory without
            // one is a half-made upload, as old as the directory.
            let touched = fs::metadata(dir.join("data"))
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified());
            let stale = touched
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            if stale && fs::remove_dir_all(&dir).is_ok() {
                swept.push(
                    dir.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        Ok(swept)
    }

    pub fn delete_upload(&self, id: &str) -> io::Result<()> {
        fs::remove_dir_all(self.root.join("uploads").join(id))
    }

    /// Moves a finished upload whose content hashes to `digest` into the
    /// content store and links it into `name`.
    pub fn commit_upload(&self, name: &str, id: &str, digest: &str) -> io::Result<()> {
        let data = self.root.join("uploads").join(id).join("data");
        let target = self.blob_path(digest)?;
        if !target.is_file() {
            fs::create_dir_all(target.parent().expect("blobs dir"))?;
            fs::File::open(&data)?.sync_all()?;
            fs::rename(&data, &target)?;
            fs::File::open(target.parent().expect("blobs dir"))?.sync_all()?;
        }
        self.link_blob(name, digest)?;
        self.delete_upload(id)
    }

    // Manifests.

    /// Stores a validated manifest, links it into `name` with its media
    /// type, records it as a referrer of `subject`, and points `tag` at it.
    pub fn put_manifest(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
        referrer: Option<(&str, &serde_json::Value)>,
    ) -> io::Result<()> {
        let (stored, _) = self
            .store
            .write_blob(bytes, Some(digest))
            .map_err(|e| io::Error::other(e.to_string()))?;
        debug_assert_eq!(stored, digest);
        let repo = self.repo(name);
        self.write_file(
            &repo.join("_manifests").join(hex_of(digest)),
            media_type.as_bytes(),
        )?;
        if let Some((subject, descriptor)) = referrer {
            self.write_file(
                &repo
                    .join("_referrers")
                    .join(hex_of(subject))
                    .join(hex_of(digest)),
                descriptor.to_string().as_bytes(),
            )?;
        }
        if let Some(tag) = tag {
            self.write_file(&repo.join("_tags").join(tag), digest.as_bytes())?;
        }
        Ok(())
    }

    /// Manifest `digest` of `name`: its media type and bytes.
    pub fn manifest(&self, name: &str, digest: &str) -> Option<(String, Vec<u8>)> {
        let media_type =
            fs::read_to_string(self.repo(name).join("_manifests").join(hex_of(digest))).ok()?;
        let bytes = self.store.read_blob(digest).ok()?;
        Some((media_type, bytes))
    }

    pub fn has_manifest(&self, name: &str, digest: &str) -> bool {
        self.repo(name)
            .join("_manifests")
            .join(hex_of(digest))
            .is_file()
    }

    pub fn resolve_tag(&self, name: &str, tag: &str) -> Option<String> {
        fs::read_to_string(self.repo(name).join("_tags").join(tag)).ok()
    }

    /// The tags of `name`, sorted; `None` if there is no such repository.
    pub fn tags(&self, name: &str) -> Option<Vec<String>> {
        if !self.repo_exists(name) {
            return None;
        }
        let mut tags: Vec<String> = fs::read_dir(self.repo(name).join("_tags"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|t| crate::names::is_valid_tag(t))
            .collect();
        tags.sort();
        Some(tags)
    }

    pub fn delete_tag(&self, name: &str, tag: &str) -> io::Result<bool> {
        Self::remove(&self.repo(name).join("_tags").join(tag))
    }

    /// Unlinks manifest `digest` from `name`, with every tag pointing at it
    /// and its entry among its subject's referrers.
    pub fn delete_manifest(&self, name: &str, digest: &str) -> io::Result<bool> {
        let repo = self.repo(name);
        if !Self::remove(&repo.join("_manifests").join(hex_of(digest)))? {
            return Ok(false);
        }
        for tag in self.tags(name).unwrap_or_default() {
            if self.resolve_tag(name, &tag).as_deref() == Some(digest) {
                self.delete_tag(name, &tag)?;
            }
        }
        for subject in fs::read_dir(repo.join("_referrers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            Self::remove(&subject.path().join(hex_of(digest)))?;
        }
        Ok(true)
    }

    /// The descriptors of manifests in `name` whose subject is `digest`.
    pub fn referrers(&self, name: &str, digest: &str) -> Vec<serde_json::Value> {
        let mut found: Vec<serde_json::Value> =
            fs::read_dir(self.repo(name).join("_referrers").join(hex_of(digest)))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect();
        found.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_untouched_past_the_age_are_swept_and_live_ones_stay() {
        let root = tempfile::tempdir().unwrap();
        let storage = Storage::open(root.path()).unwrap();
        let stale = storage.new_upload("team/app").unwrap();
        let live = storage.new_upload("team/app").unwrap();
        let data = storage.upload_data("team/app", &stale).unwrap();
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
        fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let day = std::time::Duration::from_secs(86400);
        assert_eq!(
            storage.sweep_uploads(day).unwrap(),
            std::slice::from_ref(&stale)
        );
        assert!(storage.upload_data("team/app", &stale).is_none());
        assert!(storage.upload_data("team/app", &live).is_some());
    }
}
