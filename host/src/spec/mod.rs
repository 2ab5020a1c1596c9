//! The typed values users write: quantities now, Kubernetes-shaped manifests
//! later. Parse, don't validate later: a value that exists is valid.

mod quantity;

pub use quantity::{Quantity, QuantityError};
