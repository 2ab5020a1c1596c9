//! Stored registry credentials: `auth.json` in berth's home, in the shape
//! Docker's `config.json` uses (`{"auths": {"host": {"auth": base64(user:password)}}}`),
//! readable only by its owner.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `host[:port]` of a registry as a config.json may name it: bare, or as a
/// URL.
fn host_of(registry: &str) -> &str {
    let bare = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    match bare.split('/').next().unwrap_or(bare) {
        // Docker Hub's names for itself; berth names it docker.io.
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        host => host,
    }
}

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
        Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Credentials from a Docker `config.json` (what a Kubernetes
    /// `kubernetes.io/dockerconfigjson` Secret holds): each entry's `auth`,
    /// or its `username` and `password`. Registries are keyed by host, as
    /// berth looks them up (`https://index.docker.io/v1/` is `docker.io`).
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut by_registry = BTreeMap::new();
        for (registry, entry) in json
            .get("auths")
            .and_then(|a| a.as_object())
            .into_iter()
            .flatten()
        {
            let text = |key: &str| entry.get(key).and_then(|v| v.as_str());
            let pair = text("auth")
                .and_then(|a| STANDARD.decode(a).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
                .or_else(|| Some((text("username")?.to_owned(), text("password")?.to_owned())));
            if let Some(pair) = pair {
                by_registry.insert(host_of(registry).to_owned(), pair);
            }
        }
        Ok(Credentials { by_registry })
    }

    /// These credentials, with `over`'s taking precedence for a registry
    /// both name.
    pub fn overlaid(mut self, over: Credentials) -> Credentials {
        self.by_registry.extend(over.by_registry);
        self
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_config_gives_credentials_by_host_in_either_spelling() {
        let text = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "registry.example:5000": {"username": "robot", "password": "s3cret"},
            "broken.example": {"auth": "not base64!"}
        }}"#;
        let c = Credentials::parse(text).unwrap();
        assert_eq!(c.get("docker.io"), Some(("user", "pass")));
        assert_eq!(c.get("registry.example:5000"), Some(("robot", "s3cret")));
        assert_eq!(c.get("broken.example"), None);
        let mut base = Credentials::default();
        base.set("docker.io", "old", "old");
        base.set("ghcr.io", "g", "g");
        let both = base.overlaid(c);
        assert_eq!(both.get("docker.io"), Some(("user", "pass")));
        assert_eq!(both.get("ghcr.io"), Some(("g", "g")));
        assert!(Credentials::parse("{").is_err());
    }
}
