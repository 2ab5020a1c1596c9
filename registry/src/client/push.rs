//! `push`: every blob the registry lacks (several at once), then the
//! manifest. A blob the registry already has is skipped (HEAD); one it
//! holds in another repository is mounted; the rest are uploaded in chunks,
//! and an upload cut short (by the network or by killing berth) is resumed
//! from where the registry says it got to the next time the blob is pushed.

use std::io::{Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reqwest::{StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use super::{Access, BlobProgress, Client, ClientError, Remote, Result, TransferProgress, expect};
use crate::ContentStore;
use crate::media;

const RETRIES: usize = 3;

#[derive(serde::Serialize, serde::Deserialize)]
struct UploadRecord {
    location: String,
}

impl Client {
    /// Pushes the image `descriptor` names in `store` to `remote`, under its
    /// tag (or by digest); returns the manifest digest.
    pub async fn push(
        &self,
        store: &ContentStore,
        descriptor: &Descriptor,
        remote: &Remote,
        progress: &dyn TransferProgress,
    ) -> Result<String> {
        let reference = remote
            .digest
            .clone()
            .or_else(|| remote.tag.clone())
            .unwrap_or_else(|| "latest".to_owned());
        self.push_tree(store, descriptor, remote, &reference, progress)
            .await?;
        Ok(descriptor.digest().to_string())
    }

    async fn push_tree(
        &self,
        store: &ContentStore,
        descriptor: &Descriptor,
        remote: &Remote,
        reference: &str,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let digest = descriptor.digest().to_string();
        let bytes = store.read_blob(&digest)?;
        let document: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Invalid(format!("manifest {digest}: {e}")))?;
        let media_type = document
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| descriptor.media_type().to_string());
        if document.get("manifests").is_some() {
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Invalid(format!("index {digest}: {e}")))?;
            for child in index.manifests() {
                let child_digest = child.digest().to_string();
                Box::pin(self.push_tree(store, child, remote, &child_digest, progress)).await?;
            }
        } else {
            if !media::is_manifest(&media_type.as_str().into()) {
                return Err(ClientError::Invalid(format!(
                    "{digest} is a {media_type}, not an image manifest"
                )));
            }
            let manifest: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Invalid(format!("manifest {digest}: {e}")))?;
            let blobs = media::blobs_of(&manifest);
            futures_util::stream::iter(blobs)
                .map(|d| self.push_blob(store, remote, d.digest().to_string(), d.size(), progress))
                .buffer_unordered(self.options().concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
        }
        let what = format!("pushing manifest {digest} as {reference}");
        let url = self.url(remote, &format!("manifests/{reference}"))?;
        let response = self
            .send(remote, Access::Push, &what, |http| {
                http.put(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, &media_type)
                    .body(bytes.clone())
            })
            .await?;
        let response = expect(response, &what, &[StatusCode::CREATED, StatusCode::OK]).await?;
        if let Some(echoed) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && echoed != digest
        {
            return Err(ClientError::Digest {
                what,
                expected: digest,
                actual: echoed.to_owned(),
            });
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        store: &ContentStore,
        remote: &Remote,
        digest: String,
        size: u64,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let what = format!("pushing blob {digest}");
        let record = self.upload_record(remote, &digest);
        // One push of this blob to this repository at a time from this
        // home: another waits here, then finds the blob there, instead of
        // writing into the same resumable upload.
        let _claim = claim(&record).await?;
        let blob_url = self.url(remote, &format!("blobs/{digest}"))?;
        let head = self
            .send(remote, Access::Push, &what, |http| {
                http.head(blob_url.clone())
            })
            .await?;
        let mut bar = progress.blob(&digest, size, "pushing");
        if head.status() == StatusCode::OK {
            self.remember_location(&digest, remote);
            bar.done("already there");
            return Ok(());
        }

        let mut session = self.resume(remote, &record, &what).await;
        if session.is_none() {
            for from in self.known_locations(&digest, remote) {
                let url = self.url(
                    remote,
                    &format!("blobs/uploads/?mount={digest}&from={from}"),
                )?;
                let response = self
                    .send(remote, Access::Push, &what, |http| http.post(url.clone()))
                    .await?;
                match response.status() {
                    StatusCode::CREATED => {
                        bar.done(&format!("mounted from {from}"));
                        return Ok(());
                    }
                    StatusCode::ACCEPTED => {
                        session = Some((location(&response, &url)?, 0));
                        break;
                    }
                    _ => {}
                }
            }
        }
        let (mut location, mut offset) = match session {
            Some(session) => session,
            None => {
                let url = self.url(remote, "blobs/uploads/")?;
                let response = self
                    .send(remote, Access::Push, &what, |http| http.post(url.clone()))
                    .await?;
                let response = expect(response, &what, &[StatusCode::ACCEPTED]).await?;
                (location(&response, &url)?, 0)
            }
        };
        if offset > 0 {
            progress.note(&format!("resuming {digest} at byte {offset} of {size}"));
        }
        let path = store.blob_path(&digest)?;
        let bar = Arc::new(Mutex::new(bar));
        bar.lock().expect("lock").advance(offset);

        self.save_record(&record, &location);
        // Small blobs go whole with the closing PUT; big ones in PATCHes.
        let mut failures = 0;
        let chunk = self.options().chunk_size.max(1);
        while size > chunk && offset < size {
            let length = (size - offset).min(chunk);
            let range = format!("{offset}-{}", offset + length - 1);
            let url = location.clone();
            let sent = self
                .send(remote, Access::Push, &what, |http| {
                    http.patch(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_RANGE, &range)
                        .header(reqwest::header::CONTENT_LENGTH, length)
                        .body(file_body(&path, offset, length, bar.clone()))
                })
                .await;
            let reason = match sent {
                Ok(response) if response.status() == StatusCode::ACCEPTED => {
                    location = self::location(&response, &location)?;
                    offset += length;
                    self.save_record(&record, &location);
                    continue;
                }
                Ok(response) => expect(response, &what, &[]).await.err(),
                Err(e) => Some(e),
            };
            let gave_up = || {
                reason
                    .unwrap_or_else(|| ClientError::Invalid(format!("{what}: the upload was lost")))
            };
            failures += 1;
            if failures > RETRIES {
                return Err(gave_up());
            }
            // Ask the registry how much it has, and go on from there.
            let Some((at, received)) = self.upload_status(remote, &location, &what).await else {
                return Err(gave_up());
            };
            location = at;
            bar.lock()
                .expect("lock")
                .advance(received.saturating_sub(offset));
            offset = received;
        }

        let mut url = location.clone();
        url.query_pairs_mut().append_pair("digest", &digest);
        let remaining = size - offset;
        let response = self
            .send(remote, Access::Push, &what, |http| {
                let request = http.put(url.clone());
                if remaining == 0 {
                    request.header(reqwest::header::CONTENT_LENGTH, 0)
                } else {
                    request
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_LENGTH, remaining)
                        .body(file_body(&path, offset, remaining, bar.clone()))
                }
            })
            .await?;
        expect(response, &what, &[StatusCode::CREATED]).await?;
        let _ = std::fs::remove_file(&record);
        self.remember_location(&digest, remote);
        bar.lock().expect("lock").done("pushed");
        Ok(())
    }

    /// An upload this client left unfinished, if the registry still has it:
    /// its location and how many bytes it holds.
    async fn resume(&self, remote: &Remote, record: &PathBuf, what: &str) -> Option<(Url, u64)> {
        let text = std::fs::read_to_string(record).ok()?;
        let saved: UploadRecord = serde_json::from_str(&text).ok()?;
        let url = Url::parse(&saved.location).ok()?;
        let status = self.upload_status(remote, &url, what).await;
        if status.is_none() {
            let _ = std::fs::remove_file(record);
        }
        status
    }

    async fn upload_status(
        &self,
        remote: &Remote,
        location: &Url,
        what: &str,
    ) -> Option<(Url, u64)> {
        let response = self
            .send(remote, Access::Push, what, |http| {
                http.get(location.clone())
            })
            .await
            .ok()?;
        if response.status() != StatusCode::NO_CONTENT {
            return None;
        }
        // `Range: 0-N` holds N+1 bytes; registries say `0-0` for an empty
        // upload, which is read as empty (a one-byte upload is never resumed).
        let range = response.headers().get("range")?.to_str().ok()?.to_owned();
        let end: u64 = range
            .trim_start_matches("bytes=")
            .split_once('-')?
            .1
            .parse()
            .ok()?;
        let received = if range.ends_with("0-0") { 0 } else { end + 1 };
        Some((self::location(&response, location).ok()?, received))
    }

    fn upload_record(&self, remote: &Remote, digest: &str) -> PathBuf {
        let key = Sha256::digest(format!(
            "{}/{}@{digest}",
            remote.api_host, remote.repository
        ));
        self.options()
            .state_dir
            .join("uploads")
            .join(format!("{}.json", hex::encode(key)))
    }

    fn save_record(&self, record: &PathBuf, location: &Url) {
        let text = serde_json::to_string(&UploadRecord {
            location: location.to_string(),
        })
        .expect("JSON");
        if let Some(dir) = record.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(record, text);
    }

    fn locations_file(&self, digest: &str) -> PathBuf {
        self.options()
            .state_dir
            .join("locations")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Notes that `remote`'s registry holds `digest` in `remote`'s
    /// repository, so a later push to another repository can mount it.
    pub(crate) fn remember_location(&self, digest: &str, remote: &Remote) {
        let line = format!("{}/{}", remote.api_host, remote.repository);
        let file = self.locations_file(digest);
        let mut known: Vec<String> = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if known.contains(&line) {
            return;
        }
        known.push(line);
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&file, known.join("\n") + "\n");
    }

    /// Other repositories of `remote`'s registry known to hold `digest`.
    fn known_locations(&self, digest: &str, remote: &Remote) -> Vec<String> {
        let prefix = format!("{}/", remote.api_host);
        std::fs::read_to_string(self.locations_file(digest))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|repo| *repo != remote.repository && crate::names::is_valid_name(repo))
            .map(str::to_owned)
            .collect()
    }
}

/// The upload URL a response points to, resolved against the request's.
fn location(response: &reqwest::Response, base: &Url) -> Result<Url> {
    let value = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ClientError::Invalid(format!("{base}: the registry sent no Location")))?;
    base.join(value)
        .map_err(|e| ClientError::Invalid(format!("{base}: bad Location {value}: {e}")))
}

/// `length` bytes of the blob file from `offset`, streamed, counted on `bar`.
fn file_body(
    path: &PathBuf,
    offset: u64,
    length: u64,
    bar: Arc<Mutex<Box<dyn BlobProgress>>>,
) -> reqwest::Body {
    let opened = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        Ok(f)
    });
    match opened {
        Ok(file) => {
            let reader = tokio::fs::File::from_std(file).take(length);
            let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).inspect(
                move |chunk| {
                    if let Ok(chunk) = chunk {
                        bar.lock().expect("lock").advance(chunk.len() as u64);
                    }
                },
            );
            reqwest::Body::wrap_stream(stream)
        }
        Err(e) => reqwest::Body::wrap_stream(futures_util::stream::once(async move {
            Err::<bytes::Bytes, _>(e)
        })),
    }
}

/// An exclusive lock on the lock file beside an upload record, held while
/// the returned file is open (the kernel drops it if berth dies).
async fn claim(record: &std::path::Path) -> Result<std::fs::File> {
    let path = record.with_extension("lock");
    let failed =
        |e: std::io::Error| ClientError::Invalid(format!("locking {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
    }
}
