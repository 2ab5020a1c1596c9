//! Image manifests, indexes and configs as berth reads them from a store or
//! a registry: the OCI types, and the digests and descriptors in them.
#![no_main]

use berth_registry::oci::{ImageConfiguration, ImageIndex, ImageManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(manifest) = ImageManifest::from_reader(bytes) {
        for layer in manifest.layers() {
            let _ = berth_registry::names::split_digest(&layer.digest().to_string());
        }
    }
    if let Ok(index) = ImageIndex::from_reader(bytes) {
        for manifest in index.manifests() {
            let _ = berth_registry::names::split_digest(&manifest.digest().to_string());
        }
    }
    let _ = ImageConfiguration::from_reader(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = berth_registry::names::split_digest(text);
        let _ = berth_registry::names::is_valid_name(text);
        let _ = berth_registry::names::is_valid_tag(text);
    }
});
