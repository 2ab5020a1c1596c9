//! Where berth keeps its data: one directory, `$BERTH_HOME`, so tests and users
//! can keep separate homes side by side.

use std::path::PathBuf;

/// The data directory: `$BERTH_HOME`, else `$XDG_DATA_HOME/berth`
/// (`~/.local/share/berth`).
pub fn berth_home() -> PathBuf {
    if let Some(home) = std::env::var_os("BERTH_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from(".berth"))
        .join("berth")
}

/// Where compiled wasm artifacts are cached, keyed by content and engine settings.
pub fn compile_cache_dir() -> PathBuf {
    berth_home().join("cache").join("compiled")
}

/// `berth up`'s own home for the project at `project` (a directory or its
/// first manifest): its state, API certificates, kubeconfig, socket and
/// pods, apart from a daemon's and from `up` in another project, so the
/// two never collide. One per project, so its kubeconfig stays put.
pub fn up_home(project: &std::path::Path) -> PathBuf {
    use sha2::Digest as _;
    let canonical = project
        .canonicalize()
        .unwrap_or_else(|_| project.to_path_buf());
    let name: String = canonical
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect();
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    berth_home()
        .join("up")
        .join(format!("{name}-{}", &hex::encode(digest)[..8]))
}

/// Makes `dir` (and what leads to it) if missing, and makes it its owner's
/// alone (0700): where the store, keys and tokens are.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `text` to `path` with mode 0600, replacing it whole: a reader
/// never sees half a file.
pub fn write_private(path: &std::path::Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    temp.write_all(text)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
