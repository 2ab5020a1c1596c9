//! The runtimes, as the control plane sees them: the seam (`berth-runtime`)
//! and its two backends, each a crate of its own so it builds and is
//! tested alone (the wasm one links no control plane, for the containerd
//! shim; the Linux one and its init link no wasmtime).

pub use berth_linux as linux;
pub use berth_runtime::*;
pub use berth_wasm as wasm;
