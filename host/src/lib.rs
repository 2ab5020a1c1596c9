//! berth: a WebAssembly-first microservice host.
//!
//! Requests flow `router` → `runtime` (one `dyn Runtime` per backend) → a guest.
//! `spec` holds the typed values users write (quantities, manifests);
//! `state` keeps applied objects durably; `cli` is the only place that
//! talks to a terminal.

pub mod api;
pub mod cli;
pub mod controller;
pub mod daemon;
pub mod dashboard;
pub mod handover;
pub mod home;
pub mod image;
pub mod kubelet;
pub mod metrics;
pub mod progress;
pub mod router;
pub mod runtime;
pub mod scheduler;
pub use berth_spec as spec;
pub mod state;
