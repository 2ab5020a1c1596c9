use std::path::PathBuf;

/// Why a store operation failed; each names the blob, tag or path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is corrupt on disk at {}: its content hashes to {actual}", path.display())]
    Corrupt {
        digest: String,
        actual: String,
        path: PathBuf,
    },
    #[error("blob {0} is not in the store")]
    BlobUnknown(String),
    #[error("no image named {0}")]
    NotFound(String),
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{what} is not valid JSON: {reason}")]
    Json { what: String, reason: String },
    #[error("unsupported digest {0}: sha256 or sha512 with lowercase hex")]
    UnsupportedDigest(String),
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}
