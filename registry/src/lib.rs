//! berth-registry: OCI content — the local store today; the distribution
//! server and client grow here.
//!
//! The store is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) that skopeo, umoci and oras can read and write. Every
//! blob is hashed while it is written to a temporary file and renamed into
//! place only if its digest matches, so nothing half-written is ever visible
//! under a digest; blobs are hashed again when read, so corruption on disk is
//! caught on use rather than served.

pub mod archive;
pub mod client;
mod error;
pub mod media;
pub mod names;
mod reference;
pub mod server;
mod store;

pub use error::StoreError;
pub use reference::{Reference, ReferenceError};
pub use store::{BlobReader, ContentStore, PruneReport, REF_NAME, descriptor};

/// The OCI types the store speaks, re-exported so users need not depend on
/// the same oci-spec version.
pub use oci_spec::image as oci;
