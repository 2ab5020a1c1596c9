//! Blob uploads in progress: the bytes go to `uploads/<id>/data` on disk;
//! the running sha256 and size live in memory so each chunk is hashed once,
//! as it arrives. After a restart the hash is rebuilt from the data file,
//! so an upload interrupted by a crash can still be resumed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::BytesMut;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

/// Bytes gathered before each write: large enough that a write (and the
/// hop to a blocking thread it takes) is rare next to the data moved.
const CHUNK: usize = 1 << 20;

#[derive(Default)]
pub struct Uploads {
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
}

impl Uploads {
    /// The session of upload `id`; requests on one upload take turns.
    pub fn session(&self, id: &str) -> Arc<tokio::sync::Mutex<Session>> {
        self.sessions
            .lock()
            .expect("lock")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    pub fn forget(&self, id: &str) {
        self.sessions.lock().expect("lock").remove(id);
    }
}

#[derive(Default)]
pub struct Session {
    /// `None` until the data file has been hashed by this process.
    hasher: Option<Sha256>,
    size: u64,
}

/// Why an append stopped: the client's stream failed (what arrived is
/// kept), or the disk did.
#[derive(Debug)]
pub enum AppendError {
    Client(String),
    Disk(io::Error),
}

impl Session {
    /// Makes the running hash agree with the data file.
    pub async fn load(&mut self, data: &Path) -> io::Result<()> {
        if self.hasher.is_some() {
            return Ok(());
        }
        let data = data.to_owned();
        let (hasher, size) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let mut file = std::fs::File::open(&data)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok((hasher, size));
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
        })
        .await
        .map_err(io::Error::other)??;
        self.hasher = Some(hasher);
        self.size = size;
        Ok(())
    }

    /// Bytes received so far (call `load` first).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of everything received so far (call `load` first).
    pub fn digest(&self) -> String {
        let hasher = self.hasher.clone().unwrap_or_default();
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// Appends `body` to the data file. Writing and hashing one chunk on a
    /// blocking thread overlaps with receiving the next.
    pub async fn append(&mut self, data: &Path, body: Body) -> Result<u64, AppendError> {
        self.load(data).await.map_err(AppendError::Disk)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(data)
            .map_err(AppendError::Disk)?;
        let hasher = self.hasher.take().expect("loaded");
        let mut idle = Some((file, hasher));
        let mut writing: Option<tokio::task::JoinHandle<io::Result<(std::fs::File, Sha256)>>> =
            None;
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut appended = 0u64;
        let mut stream = body.into_data_stream();
        let mut client_error = None;

        loop {
            let last = match stream.next().await {
                Some(Ok(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    false
                }
                Some(Err(e)) => {
                    client_error = Some(e.to_string());
                    true
                }
                None => true,
            };
            if buf.len() >= CHUNK || (last && !buf.is_empty()) {
                let (mut file, mut hasher) = match writing.take() {
                    Some(handle) => handle
                        .await
                        .map_err(|e| AppendError::Disk(io::Error::other(e)))?
                        .map_err(|e| self.broken(e))?,
                    None => idle.take().expect("one owner"),
                };
                let chunk = buf.split().freeze();
                appended += chunk.len() as u64;
                writing = Some(tokio::task::spawn_blocking(move || {
                    file.write_all(&chunk)?;
                    hasher.update(&chunk);
                    Ok((file, hasher))
                }));
            }
            if last {
                break;
            }
        }
        let (_, hasher) = match writing {
            Some(handle) => handle
                .await
                .map_err(|e| AppendError::Disk(io::Error::other(e)))?
                .map_err(|e| self.broken(e))?,
            None => idle.expect("one owner"),
        };
        self.hasher = Some(hasher);
        self.size += appended;
        match client_error {
            Some(e) => Err(AppendError::Client(e)),
            None => Ok(appended),
        }
    }

    /// After a failed write the file's length is unknown: hash it again
    /// next time.
    fn broken(&mut self, e: io::Error) -> AppendError {
        self.hasher = None;
        AppendError::Disk(e)
    }
}
