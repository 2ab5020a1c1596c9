//! Stored registry credentials: `auth.json` in berth's home, in the shape
//! Docker's `config.json` uses (`{"auths": {"host": {"auth": base64(user:password)}}}`),
//! readable only by its owner.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Default, Clone)]
pub struct Credentials {
    by_registry: BTreeMap<String, (String, String)>,
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut by_registry = BTreeMap::new();
        for (registry, entry) in json
            .get("auths")
            .and_then(|a| a.as_object())
            .into_iter()
            .flatten()
        {
            let pair = entry
                .get("auth")
                .and_then(|a| a.as_str())
                .and_then(|a| STANDARD.decode(a).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
            if let Some(pair) = pair {
                by_registry.insert(registry.clone(), pair);
            }
        }
        Ok(Credentials { by_registry })
    }

    pub fn get(&self, registry: &str) -> Option<(&str, &str)> {
        self.by_registry
            .get(registry)
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    pub fn set(&mut self, registry: &str, user: &str, password: &str) {
        self.by_registry
            .insert(registry.to_owned(), (user.to_owned(), password.to_owned()));
    }

    /// Writes the file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let auths: serde_json::Map<String, serde_json::Value> = self
            .by_registry
            .iter()
            .map(|(registry, (user, password))| {
                (
                    registry.clone(),
                    serde_json::json!({"auth": STANDARD.encode(format!("{user}:{password}"))}),
                )
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&serde_json::json!({"auths": auths})).expect("JSON");
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}
