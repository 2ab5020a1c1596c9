//! Secrets encrypted at rest, as kube-apiserver's EncryptionConfiguration
//! has it: the first provider of the resource's list seals what is written,
//! every listed one may open what is read, so a key is rotated by putting a
//! new one first, letting the store seal everything again (it does at
//! start), then dropping the old one. Sealed objects are stored as
//! `k8s:enc:aesgcm:v1:KEYNAME:` and the base64 of nonce, ciphertext and tag;
//! the object's uid is the associated data, so a sealed row moved onto
//! another object does not open.

use std::path::Path;

use base64::Engine as _;
use ring::aead;
use serde::Deserialize;

use crate::spec::Kind;

const PREFIX: &str = "k8s:enc:aesgcm:v1:";

/// The keys of one resource's providers.
pub struct Sealer {
    /// Resources (by kind) whose objects are sealed or opened here.
    kinds: Vec<Kind>,
    /// Whether the first provider is aesgcm: writes are then sealed with
    /// the first key; else (identity) stored plain.
    sealed_first: bool,
    /// Every aesgcm key listed, in order, to open what was sealed.
    keys: Vec<Key>,
}

struct Key {
    name: String,
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("Sealer")
            .field("kinds", &self.kinds)
            .field("writer", &self.writer().map(|k| &k.name))
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{file}: {reason}")]
    Config { file: String, reason: String },
    #[error("sealed with key {0:?}, which the encryption configuration does not list")]
    UnknownKey(String),
    #[error("it does not open with key {0:?}: altered, or sealed for another object")]
    Tampered(String),
    #[error("its sealed form is malformed: {0}")]
    Malformed(String),
}

// Kubernetes' apiserver.config.k8s.io/v1 EncryptionConfiguration, the part
// berth acts on.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Configuration {
    api_version: String,
    kind: String,
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Provider {
    aesgcm: Option<Keys>,
    identity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    keys: Vec<NamedKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedKey {
    name: String,
    secret: String,
}

impl Sealer {
    /// Seals nothing, opens only plain text.
    pub fn identity() -> Sealer {
        Sealer {
            kinds: Vec::new(),
            sealed_first: false,
            keys: Vec::new(),
        }
    }

    /// Reads the configuration at `path`, which only its owner may read;
    /// when there is none and `make` says so (berth's own default path,
    /// not one a user named, which may be a typo), makes one there with a
    /// new random AES-256 key for Secrets, as a hardened cluster would be.
    pub fn load_or_make(path: &Path, make: bool) -> Result<Sealer, SealError> {
        let error = |reason: String| SealError::Config {
            file: path.display().to_string(),
            reason,
        };
        if !path.exists() && !make {
            return Err(error("no such file".into()));
        }
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| error(format!("no random key: {e}")))?;
            let text = format!(
                "# Secrets are sealed with the first provider's first key and opened with\n\
                 # any listed. To rotate: add a new key first, restart berth (it seals every\n\
                 # Secret again), then remove the old key.\n\
                 apiVersion: apiserver.config.k8s.io/v1\n\
                 kind: EncryptionConfiguration\n\
                 resources:\n\
                 - resources: [secrets]\n  \
                   providers:\n  \
                   - aesgcm:\n      \
                       keys:\n      \
                       - name: key1\n        \
                         secret: {}\n  \
                   - identity: {{}}\n",
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            crate::home::write_private(path, text.as_bytes())
                .map_err(|e| error(format!("writing it: {e}")))?;
        }
        {
            use std::os::unix::fs::MetadataExt as _;
            let mode = std::fs::metadata(path)
                .map_err(|e| error(e.to_string()))?
                .mode();
            if mode & 0o077 != 0 {
                return Err(error(format!(
                    "its keys are readable by others (mode {:o}): chmod 600 it",
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Sealer::parse(&text).map_err(error)
    }

    /// A configuration's text as a sealer, or what is wrong with it.
    pub fn parse(text: &str) -> Result<Sealer, String> {
        let config: Configuration = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        if config.api_version != "apiserver.config.k8s.io/v1"
            || config.kind != "EncryptionConfiguration"
        {
            return Err(format!(
                "expected apiserver.config.k8s.io/v1 EncryptionConfiguration, found {} {}",
                config.api_version, config.kind
            ));
        }
        if config.resources.len() > 1 {
            return Err(
                "resources: berth takes one entry, its providers serving every resource listed"
                    .into(),
            );
        }
        let mut sealer = Sealer::identity();
        for (i, resource) in config.resources.iter().enumerate() {
            for name in &resource.resources {
                let kind = match name.as_str() {
                    "secrets" => Kind::Secret,
                    "configmaps" => Kind::ConfigMap,
                    other => {
                        return Err(format!(
                            "resources[{i}]: berth encrypts secrets and configmaps, not {other:?}"
                        ));
                    }
                };
                if sealer.kinds.contains(&kind) {
                    return Err(format!("resources[{i}]: {name} is listed twice"));
                }
                sealer.kinds.push(kind);
            }
            for (j, provider) in resource.providers.iter().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                match (&provider.aesgcm, &provider.identity) {
                    (Some(keys), None) => {
                        for (k, named) in keys.keys.iter().enumerate() {
                            let key = aes_key(&named.secret)
                                .map_err(|e| format!("{at}.aesgcm.keys[{k}]: {e}"))?;
                            if named.name.is_empty() || named.name.contains(':') {
                                return Err(format!(
                                    "{at}.aesgcm.keys[{k}].name: {:?} must be non-empty, without ':'",
                                    named.name
                                ));
                            }
                            if sealer.keys.iter().any(|k| k.name == named.name) {
                                return Err(format!(
                                    "{at}.aesgcm.keys[{k}].name: {:?} is listed twice",
                                    named.name
                                ));
                            }
                            sealer.keys.push(Key {
                                name: named.name.clone(),
                                key,
                            });
                        }
                        if j == 0 {
                            if keys.keys.is_empty() {
                                return Err(format!(
                                    "{at}.aesgcm.keys: the first provider needs a key"
                                ));
                            }
                            sealer.sealed_first = true;
                        }
                    }
                    (None, Some(_)) => {}
                    _ => {
                        return Err(format!(
                            "{at}: berth's providers are aesgcm and identity, one per entry"
                        ));
                    }
                }
            }
        }
        Ok(sealer)
    }

    /// The key writes are sealed with: the first provider's first (the
    /// first listed, as that provider comes first).
    fn writer(&self) -> Option<&Key> {
        self.keys.first().filter(|_| self.sealed_first)
    }

    /// Whether objects of `kind` are sealed by this configuration.
    pub fn covers(&self, kind: Kind) -> bool {
        self.writer().is_some() && self.kinds.contains(&kind)
    }

    /// The name of the key writes use, if they are sealed.
    pub fn writing_key(&self) -> Option<&str> {
        self.writer().map(|k| k.name.as_str())
    }

    /// `text` (an object of `kind` with `uid`) as it is to be stored.
    pub fn seal(&self, kind: Kind, uid: &str, text: &str) -> String {
        let Some(writer) = self.writer().filter(|_| self.kinds.contains(&kind)) else {
            return text.to_owned();
        };
        let mut nonce = [0u8; aead::NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let mut sealed = text.as_bytes().to_vec();
        writer
            .key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(uid.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM seals any length berth stores");
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}:{}",
            writer.name,
            base64::engine::general_purpose::STANDARD.encode(stored)
        )
    }

    /// The object text of what is stored for the object with `uid`:
    /// opened if sealed, as it is if plain.
    pub fn open(&self, uid: &str, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (name, body) = rest
            .split_once(':')
            .ok_or_else(|| SealError::Malformed("no key name".into()))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| SealError::UnknownKey(name.to_owned()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        if bytes.len() < aead::NONCE_LEN + key.key.algorithm().tag_len() {
            return Err(SealError::Malformed("too short".into()));
        }
        let (nonce, sealed) = bytes.split_at(aead::NONCE_LEN);
        let mut sealed = sealed.to_vec();
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| SealError::Malformed("bad nonce".into()))?;
        let opened = key
            .key
            .open_in_place(nonce, aead::Aad::from(uid.as_bytes()), &mut sealed)
            .map_err(|_| SealError::Tampered(name.to_owned()))?;
        String::from_utf8(opened.to_vec()).map_err(|e| SealError::Malformed(e.to_string()))
    }

    /// Whether `stored` (of `kind`) is not as a write now would store it:
    /// plain where it should be sealed, sealed where it should be plain, or
    /// sealed with another key than the first.
    pub fn stale(&self, kind: Kind, stored: &str) -> bool {
        let wanted = self.writer().filter(|_| self.kinds.contains(&kind));
        match (stored.strip_prefix(PREFIX), wanted) {
            (None, None) => false,
            (Some(rest), Some(writer)) => {
                rest.split_once(':').map(|(n, _)| n) != Some(&writer.name)
            }
            _ => true,
        }
    }
}

fn aes_key(secret: &str) -> Result<aead::LessSafeKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|e| format!("secret is not base64: {e}"))?;
    let algorithm = match bytes.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => {
            return Err(format!(
                "an AES-GCM key is 16 or 32 bytes (berth does not take 24), this one is {n}"
            ));
        }
    };
    let key = aead::UnboundKey::new(algorithm, &bytes).map_err(|_| "not an AES key".to_owned())?;
    Ok(aead::LessSafeKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: &[(&str, [u8; 32])], identity_first: bool) -> String {
        let keys: String = keys
            .iter()
            .map(|(name, key)| {
                format!(
                    "      - name: {name}\n        secret: {}\n",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
            })
            .collect();
        let aes = format!("  - aesgcm:\n      keys:\n{keys}");
        let identity = "  - identity: {}\n";
        let providers = if identity_first {
            format!("{identity}{aes}")
        } else {
            format!("{aes}{identity}")
        };
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        )
    }

    #[test]
    fn a_sealed_object_opens_only_for_its_uid_and_with_a_listed_key() {
        let one = Sealer::parse(&config(&[("k1", [1; 32])], false)).unwrap();
        let text = r#"{"data":{"password":"aHVudGVyMg=="}}"#;
        let sealed = one.seal(Kind::Secret, "uid-1", text);
        assert!(sealed.starts_with("k8s:enc:aesgcm:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("aHVudGVyMg"));
        assert_eq!(one.open("uid-1", &sealed).unwrap(), text);
        assert!(matches!(
            one.open("uid-2", &sealed),
            Err(SealError::Tampered(_))
        ));
        // Plain text still reads (written before sealing was on).
        assert_eq!(one.open("uid-1", text).unwrap(), text);
        // ConfigMaps are not listed: stored as they are.
        assert_eq!(one.seal(Kind::ConfigMap, "uid-1", text), text);
        let other = Sealer::parse(&config(&[("k2", [2; 32])], false)).unwrap();
        assert!(matches!(
            other.open("uid-1", &sealed),
            Err(SealError::UnknownKey(name)) if name == "k1"
        ));
    }

    #[test]
    fn a_new_first_key_makes_what_the_old_one_sealed_stale_but_readable() {
        let old = Sealer::parse(&config(&[("k1", [1; 32])], false)).unwrap();
        let rotated = Sealer::parse(&config(&[("k2", [2; 32]), ("k1", [1; 32])], false)).unwrap();
        let sealed = old.seal(Kind::Secret, "u", "{}");
        assert!(!old.stale(Kind::Secret, &sealed));
        assert!(rotated.stale(Kind::Secret, &sealed));
        assert_eq!(rotated.open("u", &sealed).unwrap(), "{}");
        assert!(rotated.stale(Kind::Secret, "{}"), "plain text is stale");
        // identity first: reads sealed, writes plain, and sealed is stale.
        let identity = Sealer::parse(&config(&[("k1", [1; 32])], true)).unwrap();
        assert!(!identity.covers(Kind::Secret));
        assert_eq!(identity.open("u", &sealed).unwrap(), "{}");
        assert!(identity.stale(Kind::Secret, &sealed));
        assert!(!identity.stale(Kind::Secret, "{}"));
    }

    #[test]
    fn a_configuration_berth_cannot_honour_is_refused_naming_what() {
        let bad_key = config(&[("k1", [1; 32])], false).replace(
            &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
            &base64::engine::general_purpose::STANDARD.encode([1u8; 24]),
        );
        let e = Sealer::parse(&bad_key).err().unwrap();
        assert!(
            e.contains("providers[0].aesgcm.keys[0]") && e.contains("24"),
            "{e}"
        );
        let pods = config(&[("k1", [1; 32])], false).replace("[secrets]", "[pods]");
        let e = Sealer::parse(&pods).err().unwrap();
        assert!(e.contains("\"pods\""), "{e}");
        let kms = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {name: x}\n";
        assert!(Sealer::parse(kms).is_err());
    }

    #[test]
    fn a_made_configuration_is_private_and_one_shared_with_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.yaml");
        let made = Sealer::load_or_make(&path, true).unwrap();
        assert_eq!(made.writing_key(), Some("key1"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same key again on the next start.
        let again = Sealer::load_or_make(&path, false).unwrap();
        let sealed = made.seal(Kind::Secret, "u", "{}");
        assert_eq!(again.open("u", &sealed).unwrap(), "{}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Sealer::load_or_make(&path, false).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
