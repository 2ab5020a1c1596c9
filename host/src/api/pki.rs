//! The daemon's credentials, made on first start and kept under
//! `$BERTH_HOME/pki` (mode 0700, every file 0600): a CA, a serving
//! certificate it signs (127.0.0.1, ::1, localhost and any `--tls-san`),
//! and the admin bearer token. From them the daemon writes
//! `$BERTH_HOME/kubeconfig`, so kubectl needs no other step.
//!
//! The CA outlives restarts, so a kubeconfig copied elsewhere keeps working;
//! the serving certificate is made again whenever the names it must carry
//! change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making the {what}: {source}")]
    Certificate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

type Result<T> = std::result::Result<T, PkiError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the API's TLS listener and its clients need.
pub struct Credentials {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    pub token: Arc<str>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Credentials")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Names every serving certificate carries, before `--tls-san`.
const LOCAL_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// Loads the credentials under `home/pki`, making what is missing.
pub fn load_or_make(home: &Path, extra_names: &[String]) -> Result<Credentials> {
    let dir = home.join("pki");
    make_private_dir(&dir)?;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let (ca_pem, issuer) = match (read_optional(&ca_cert)?, read_optional(&ca_key)?) {
        (Some(cert), Some(key)) => {
            let key_pair = rcgen::KeyPair::from_pem(&key).map_err(|e| PkiError::Unusable {
                path: ca_key.clone(),
                reason: e.to_string(),
            })?;
            let issuer = rcgen::Issuer::from_ca_cert_pem(&cert, key_pair).map_err(|e| {
                PkiError::Unusable {
                    path: ca_cert.clone(),
                    reason: e.to_string(),
                }
            })?;
            (cert, issuer)
        }
        _ => {
            let key_pair = rcgen::KeyPair::generate().map_err(|source| PkiError::Certificate {
                what: "CA key",
                source,
            })?;
            let mut params = rcgen::CertificateParams::default();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "berth-ca");
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = rcgen::date_time_ymd(2025, 1, 1);
            params.not_after = rcgen::date_time_ymd(2035, 1, 1);
            let cert = params
                .self_signed(&key_pair)
                .map_err(|source| PkiError::Certificate {
                    what: "CA certificate",
                    source,
                })?;
            let pem = cert.pem();
            write_private(&ca_key, key_pair.serialize_pem().as_bytes())?;
            write_private(&ca_cert, pem.as_bytes())?;
            // A new CA makes every certificate signed by an old one useless.
            let _ = std::fs::remove_file(dir.join("server.crt"));
            (pem, rcgen::Issuer::new(params, key_pair))
        }
    };

    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|s| (*s).to_owned()).collect();
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let server_cert = dir.join("server.crt");
    let server_key = dir.join("server.key");
    let names_file = dir.join("server.names");
    let wanted = names.join("\n");
    let current = read_optional(&names_file)?;
    let (cert_pem, key_pem) = match (
        current.as_deref() == Some(wanted.as_str()),
        read_optional(&server_cert)?,
        read_optional(&server_key)?,
    ) {
        (true, Some(cert), Some(key)) => (cert, key),
        _ => {
            let key_pair = rcgen::KeyPair::generate().map_err(|source| PkiError::Certificate {
                what: "serving key",
                source,
            })?;
            let mut params = rcgen::CertificateParams::new(names.clone()).map_err(|source| {
                PkiError::Certificate {
                    what: "serving certificate's names",
                    source,
                }
            })?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "berth-apiserver");
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = rcgen::date_time_ymd(2025, 1, 1);
            params.not_after = rcgen::date_time_ymd(2035, 1, 1);
            let cert =
                params
                    .signed_by(&key_pair, &issuer)
                    .map_err(|source| PkiError::Certificate {
                        what: "serving certificate",
                        source,
                    })?;
            let (cert, key) = (cert.pem(), key_pair.serialize_pem());
            write_private(&server_key, key.as_bytes())?;
            write_private(&server_cert, cert.as_bytes())?;
            write_private(&names_file, wanted.as_bytes())?;
            (cert, key)
        }
    };

    let token_file = dir.join("token");
    let token = match read_optional(&token_file)? {
        Some(token) if token.trim().len() >= 32 => token.trim().to_owned(),
        _ => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| PkiError::Unusable {
                path: token_file.clone(),
                reason: format!("no randomness for a token: {e}"),
            })?;
            let token = hex::encode(bytes);
            write_private(&token_file, token.as_bytes())?;
            token
        }
    };

    let server = server_config(&cert_pem, &key_pem).map_err(|reason| PkiError::Unusable {
        path: server_cert.clone(),
        reason,
    })?;
    Ok(Credentials {
        ca_pem,
        server: Arc::new(server),
        token: Arc::from(token),
        dir,
    })
}

fn server_config(
    cert_pem: &str,
    key_pem: &str,
) -> std::result::Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("not a PEM key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    // kubectl speaks HTTP/2 when offered; port-forward and exec upgrade
    // HTTP/1.1 connections, which h2 cannot carry.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The kubeconfig for a server at `address`: cluster, user and context
/// all named `berth`.
pub fn kubeconfig(credentials: &Credentials, address: SocketAddr) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(&credentials.ca_pem);
    let server = match address {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("https://127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("https://[::1]:{}", a.port()),
        a => format!("https://{a}"),
    };
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "berth", "cluster": {
            "server": server,
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": "berth", "user": {"token": &*credentials.token}}],
        "contexts": [{"name": "berth", "context": {
            "cluster": "berth", "user": "berth", "namespace": "default",
        }}],
        "current-context": "berth",
        "preferences": {},
    });
    yaml_serde::to_string(&document).expect("a JSON document is YAML")
}

/// Where the daemon writes its kubeconfig.
pub fn kubeconfig_path(home: &Path) -> PathBuf {
    home.join("kubeconfig")
}

/// [`crate::home::write_private`], its error naming the file.
pub fn write_private(path: &Path, text: &[u8]) -> Result<()> {
    crate::home::write_private(path, text).map_err(io(path))
}

fn make_private_dir(dir: &Path) -> Result<()> {
    crate::home::private_dir(dir).map_err(io(dir))
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Compares without stopping at the first difference, so the time taken
/// tells nothing of how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn credentials_are_made_once_private_and_kept() {
        let home = tempfile::tempdir().unwrap();
        let first = load_or_make(home.path(), &[]).unwrap();
        let second = load_or_make(home.path(), &[]).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.token, second.token);
        assert_eq!(first.token.len(), 64);
        for file in ["ca.crt", "ca.key", "server.crt", "server.key", "token"] {
            let mode = std::fs::metadata(home.path().join("pki").join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let dir_mode = std::fs::metadata(home.path().join("pki"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn a_new_name_reissues_the_serving_certificate_under_the_same_ca() {
        let home = tempfile::tempdir().unwrap();
        let first = load_or_make(home.path(), &[]).unwrap();
        let cert = std::fs::read(home.path().join("pki/server.crt")).unwrap();
        let again = load_or_make(home.path(), &["berth.example".into()]).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem);
        let reissued = std::fs::read(home.path().join("pki/server.crt")).unwrap();
        assert_ne!(cert, reissued);
        let kubeconfig = kubeconfig(&again, "127.0.0.1:6443".parse().unwrap());
        assert!(kubeconfig.contains("server: https://127.0.0.1:6443"));
        assert!(kubeconfig.contains("current-context: berth"));
    }
}
