//! Which documents are manifests and which are indexes, in both the OCI and
//! the Docker v2 schema 2 spellings: images pulled from Docker Hub or built
//! by Docker use the latter, and berth reads them the same way.

use oci_spec::image::MediaType;

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
