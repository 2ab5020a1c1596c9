//! OCI archives: a tar of an image layout, as `docker save`'s OCI mode and
//! `skopeo copy oci-archive:` write them.
//!
//! Export writes `oci-layout`, an `index.json` naming the chosen images and
//! every blob they reach. Import never extracts anything to a path from the
//! archive: each `blobs/sha256/<hex>` entry streams through the store's
//! verified write (kept only if it hashes to `<hex>`), other entries are
//! ignored, and the names in `index.json` are tagged last, once every blob
//! they reach is present.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::error::StoreError;
use crate::store::{ContentStore, REF_NAME};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("archive entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("reading the archive: {0}")]
    Read(std::io::Error),
    #[error("writing the archive: {0}")]
    Write(std::io::Error),
    #[error("the archive has no index.json")]
    NoIndex,
    #[error(
        "the archive names no image (no org.opencontainers.image.ref.name annotation in its \
         index.json): nothing was loaded"
    )]
    NoNames,
}

/// Writes the images tagged `names` (and every blob they reach) as an OCI archive.
pub fn export(store: &ContentStore, names: &[String], out: impl Write) -> Result<(), ArchiveError> {
    let manifests = names
        .iter()
        .map(|name| store.resolve(name))
        .collect::<Result<Vec<_>, _>>()?;
    let blobs = complete(store, manifests.iter().cloned())?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index of stored manifests is valid");

    let mut tar = tar::Builder::new(out);
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).expect("JSON"),
    )?;
    for digest in &blobs {
        let mut blob = store.open_blob(digest)?;
        let size = std::fs::metadata(store.blob_path(digest)?)
            .map_err(ArchiveError::Read)?
            .len();
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        // blobs/<algorithm>/<hex>, as the OCI layout has it.
        let path = format!("blobs/{}", digest.replacen(':', "/", 1));
        // A blob corrupted on disk fails the read (and the export) here.
        tar.append_data(&mut header, &path, &mut blob)
            .map_err(|e| {
                if e.get_ref().is_some() {
                    ArchiveError::Store(blob.error(e))
                } else {
                    ArchiveError::Write(e)
                }
            })?;
    }
    tar.into_inner()
        .map_err(ArchiveError::Write)?
        .flush()
        .map_err(ArchiveError::Write)
}

/// Reads an OCI archive into the store; returns the names it tagged.
pub fn import(store: &ContentStore, input: impl Read) -> Result<Vec<String>, ArchiveError> {
    let mut archive = tar::Archive::new(input);
    let mut index: Option<ImageIndex> = None;
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = path.trim_start_matches("./");
        if name == "index.json" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(ArchiveError::Read)?;
            index = Some(
                serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Entry {
                    entry: path.clone(),
                    reason: e.to_string(),
                })?,
            );
        } else if let Some(blob) = name.strip_prefix("blobs/")
            && let Some((algorithm, hex)) = blob.split_once('/')
        {
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let digest = format!("{algorithm}:{hex}");
            store
                .write_blob(&mut entry, Some(&digest))
                .map_err(|e| ArchiveError::Entry {
                    entry: path.clone(),
                    reason: e.to_string(),
                })?;
        }
    }
    let index = index.ok_or(ArchiveError::NoIndex)?;
    // A name is what makes an image loaded: without one, nothing would
    // reach what was read (and `image prune` sweeps it).
    if !index.manifests().iter().any(|d| {
        d.annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key(REF_NAME))
    }) {
        return Err(ArchiveError::NoNames);
    }
    let mut tagged = Vec::new();
    for descriptor in index.manifests() {
        // Everything the image reaches must have arrived before it is named.
        complete(store, [descriptor.clone()])?;
        let Some(name) = descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
        else {
            continue;
        };
        store.tag(name, descriptor)?;
        tagged.push(name.clone());
    }
    Ok(tagged)
}

/// Every blob `roots` reach; fails on a missing one.
fn complete(
    store: &ContentStore,
    roots: impl IntoIterator<Item = Descriptor>,
) -> Result<BTreeSet<String>, StoreError> {
    let blobs = store.reachable(roots)?;
    match blobs.iter().find(|digest| !store.has_blob(digest)) {
        Some(missing) => Err(StoreError::BlobUnknown(missing.clone())),
        None => Ok(blobs),
    }
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
        .map_err(ArchiveError::Write)
}
