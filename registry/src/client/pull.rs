//! `pull`: a manifest (the platform berth runs, when the tag names an
//! index), then every blob the local store lacks, several at once, each
//! verified against its digest as it is written.

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_spec::image::{ImageIndex, ImageManifest};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use super::{
    Access, Client, ClientError, MANIFEST_ACCEPT, Remote, Result, TransferProgress, expect,
};
use crate::ContentStore;
use crate::media;

/// What a pull stored.
#[derive(Debug)]
pub struct Pulled {
    /// The manifest that was stored (the chosen platform's, for an index).
    pub digest: String,
    pub blobs_fetched: usize,
    pub blobs_present: usize,
}

/// A manifest as fetched: bytes, media type, verified digest.
pub(crate) struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Client {
    /// Fetches manifest `reference` of `remote`, checking its digest against
    /// the reference (when it is one) and the registry's
    /// `Docker-Content-Digest`.
    pub(crate) async fn fetch_manifest(&self, remote: &Remote, reference: &str) -> Result<Fetched> {
        let what = format!(
            "fetching manifest {reference} of {}/{}",
            remote.registry, remote.repository
        );
        let url = self.url(remote, &format!("manifests/{reference}"))?;
        let response = self
            .send(remote, Access::Pull, &what, |http| {
                http.get(url.clone())
                    .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let response = expect(response, &what, &[StatusCode::OK]).await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let media_type = header("content-type")
            .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let advertised = header("docker-content-digest");
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Http {
                what: what.clone(),
                source,
            })?
            .to_vec();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_owned())
        } else {
            advertised.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(ClientError::Digest {
                what,
                expected,
                actual: digest,
            });
        }
        // The document's own mediaType wins over a generic Content-Type.
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
            .unwrap_or(media_type);
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Pulls `remote` into `store` and names it `local_name` there.
    pub async fn pull(
        &self,
        store: &ContentStore,
        remote: &Remote,
        local_name: &str,
        progress: &dyn TransferProgress,
    ) -> Result<Pulled> {
        let mut fetched = self.fetch_manifest(remote, remote.reference()).await?;
        for _ in 0..2 {
            let document: serde_json::Value = serde_json::from_slice(&fetched.bytes)
                .map_err(|e| ClientError::Invalid(format!("manifest {}: {e}", fetched.digest)))?;
            if document.get("manifests").is_none() {
                break;
            }
            let index: ImageIndex = serde_json::from_slice(&fetched.bytes)
                .map_err(|e| ClientError::Invalid(format!("index {}: {e}", fetched.digest)))?;
            let chosen = media::choose_platform(&index).map_err(|offered| {
                ClientError::Invalid(format!(
                    "{}/{}:{} has no manifest for wasm or linux/amd64 (it offers: {offered})",
                    remote.registry,
                    remote.repository,
                    remote.reference()
                ))
            })?;
            let platform = media::Platform::of(chosen)
                .map_or("the only platform".to_owned(), |p| p.to_string());
            progress.note(&format!("index {}: pulling {platform}", fetched.digest));
            fetched = self
                .fetch_manifest(remote, chosen.digest().as_ref())
                .await?;
        }
        if !media::is_manifest(&fetched.media_type.as_str().into()) {
            return Err(ClientError::Invalid(format!(
                "{} is a {}, not an image manifest",
                fetched.digest, fetched.media_type
            )));
        }
        let manifest: ImageManifest = serde_json::from_slice(&fetched.bytes)
            .map_err(|e| ClientError::Invalid(format!("manifest {}: {e}", fetched.digest)))?;
        let blobs = media::blobs_of(&manifest);
        let (present, missing): (Vec<_>, Vec<_>) = blobs
            .into_iter()
            .partition(|d| store.has_blob(d.digest().as_ref()));
        let fetched_count = missing.len();
        futures_util::stream::iter(missing)
            .map(|d| self.download(store, remote, d.digest().to_string(), d.size(), progress))
            .buffer_unordered(self.options().concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        store.write_blob(&fetched.bytes[..], Some(&fetched.digest))?;
        let descriptor = crate::descriptor(
            fetched.media_type.as_str().into(),
            &fetched.digest,
            fetched.bytes.len() as u64,
        );
        store.tag(local_name, &descriptor)?;
        Ok(Pulled {
            digest: fetched.digest,
            blobs_fetched: fetched_count,
            blobs_present: present.len(),
        })
    }

    /// Streams one blob into the store; the store keeps it only if it
    /// hashes to `digest`.
    async fn download(
        &self,
        store: &ContentStore,
        remote: &Remote,
        digest: String,
        size: u64,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let what = format!("pulling blob {digest}");
        let url = self.url(remote, &format!("blobs/{digest}"))?;
        let response = self
            .send(remote, Access::Pull, &what, |http| http.get(url.clone()))
            .await?;
        let response = expect(response, &what, &[StatusCode::OK]).await?;
        let mut bar = progress.blob(&digest, size, "pulling");
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        let store = store.clone();
        let expected = digest.clone();
        // The store's writer is synchronous: it runs on a blocking thread
        // and is fed the body through a channel.
        let writer = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            store.write_blob(reader, Some(&expected))
        });
        let mut body = response.bytes_stream();
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    bar.advance(chunk.len() as u64);
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ClientError::Invalid(format!("{what}: {e}")))?;
        if let Some(failure) = failure {
            return Err(ClientError::Invalid(format!("{what}: {failure}")));
        }
        written?;
        self.remember_location(&digest, remote);
        bar.done("pulled");
        Ok(())
    }
}

/// A blocking reader over a channel of chunks, for the store's writer.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
