//! Images: layered wasm components and filesystem bundles, kept in the
//! content store (`berth_registry::ContentStore`) and unpacked safely for
//! guests to see.

pub mod unpack;
