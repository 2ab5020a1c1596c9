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

/// Where the daemon keeps each pod's volumes and logs, by pod uid.
pub fn pods_dir() -> PathBuf {
    berth_home().join("pods")
}
