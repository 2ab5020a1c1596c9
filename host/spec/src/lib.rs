//! The typed values users write: quantities and Kubernetes-shaped
//! manifests. Parse, don't validate later: a manifest that loads is one
//! berth can act on.

pub mod autoscaling;
pub mod defaults;
mod kind;
pub mod load;
pub mod objects;
pub mod placement;
mod quantity;
pub mod schedule;
pub mod security;
pub mod status;

pub use kind::Kind;
pub use load::{Loaded, ManifestError, Object, load_paths, parse_str};

pub use quantity::{Quantity, QuantityError};
pub use status::Status;
