//! Which documents are manifests and which are indexes, in both the OCI and
//! the Docker v2 schema 2 spellings: images pulled from Docker Hub or built
//! by Docker use the latter, and berth reads them the same way.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image manifest (one platform's config and layers).
pub fn is_manifest(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageManifest => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST,
        _ => false,
    }
}

/// An index of manifests (multi-platform images).
pub fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

/// `os/architecture`, as image configs and indexes write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn is_wasm(&self) -> bool {
        self.architecture == "wasm" && self.os.starts_with("wasi")
    }

    /// The platform an index entry declares.
    pub fn of(descriptor: &Descriptor) -> Option<Platform> {
        let value = serde_json::to_value(descriptor.platform().as_ref()?).ok()?;
        Some(Platform {
            os: value.get("os")?.as_str()?.to_owned(),
            architecture: value.get("architecture")?.as_str()?.to_owned(),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// The manifest of `index` berth runs: a wasm one (wasip2 before other WASI
/// versions), else linux/amd64, else the only one there is. When none fits,
/// the platforms the index offers, for the error message.
pub fn choose_platform(index: &ImageIndex) -> Result<&Descriptor, String> {
    choose_platform_for(index, None)
}

/// [`choose_platform`], restricted to one backend: `wasm` or `linux`
/// (a pod's runtimeClassName).
pub fn choose_platform_for<'a>(
    index: &'a ImageIndex,
    runtime: Option<&str>,
) -> Result<&'a Descriptor, String> {
    let candidates: Vec<(&Descriptor, Option<Platform>)> = index
        .manifests()
        .iter()
        .filter(|d| is_manifest(d.media_type()) || is_index(d.media_type()))
        .map(|d| (d, Platform::of(d)))
        .collect();
    let wasm = runtime != Some("linux");
    let linux = runtime != Some("wasm");
    let rank = |p: &Option<Platform>| match p {
        Some(p) if wasm && p.is_wasm() && p.os == "wasip2" => Some(0),
        Some(p) if wasm && p.is_wasm() => Some(1),
        Some(p) if linux && p.os == "linux" && p.architecture == "amd64" => Some(2),
        None if runtime.is_none() && candidates.len() == 1 => Some(3),
        _ => None,
    };
    candidates
        .iter()
        .filter_map(|(d, p)| rank(p).map(|r| (r, *d)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
        .ok_or_else(|| {
            let offered: Vec<String> = candidates
                .iter()
                .map(|(_, p)| {
                    p.as_ref()
                        .map_or("unspecified".to_owned(), |p| p.to_string())
                })
                .collect();
            if offered.is_empty() {
                "nothing".to_owned()
            } else {
                offered.join(", ")
            }
        })
}

/// The blobs a manifest names: its config, then its layers.
pub fn blobs_of(manifest: &ImageManifest) -> Vec<Descriptor> {
    std::iter::once(manifest.config().clone())
        .chain(manifest.layers().iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                    "size": 1,
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn wasm_comes_first_unless_the_runtime_class_says_linux() {
        let both = index(&[("linux", "amd64"), ("wasip2", "wasm")]);
        let os = |d: &Descriptor| Platform::of(d).unwrap().os;
        assert_eq!(os(choose_platform(&both).unwrap()), "wasip2");
        assert_eq!(
            os(choose_platform_for(&both, Some("linux")).unwrap()),
            "linux"
        );
        assert_eq!(
            os(choose_platform_for(&both, Some("wasm")).unwrap()),
            "wasip2"
        );
        let linux_only = index(&[("linux", "amd64"), ("linux", "arm64")]);
        assert_eq!(
            choose_platform_for(&linux_only, Some("wasm")).unwrap_err(),
            "linux/amd64, linux/arm64"
        );
    }
}
