//! A distribution client that talks to any registry: berth's own, the CNCF
//! distribution registry, and public ones.
//!
//! Hand-written on reqwest rather than on oci-client, because what berth
//! promises needs what that crate does not expose: resuming an interrupted
//! chunked upload (its upload sessions are internal), a mount that falls
//! back to the 202 upload the registry offers (it treats 202 as an error),
//! per-layer progress, and retrying a request once after a 401 with a
//! fresh token. The auth flow is the small part: a `Basic` challenge gets
//! the stored credentials, a `Bearer` challenge sends them to the realm for
//! a token scoped to the repository.

mod auth;
pub mod credentials;
mod pull;
mod push;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::Reference;
use crate::StoreError;

pub use credentials::Credentials;
pub use pull::Pulled;

/// Where an image lives: a registry host and a repository in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// As the user named it: `127.0.0.1:5000`, `ghcr.io`, `docker.io`.
    pub registry: String,
    /// The host requests go to (`registry-1.docker.io` for `docker.io`).
    pub api_host: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Remote {
    /// Splits a reference as Docker does: a first component with a `.` or
    /// `:`, or `localhost`, is the registry; otherwise it is Docker Hub,
    /// where one-word names live under `library/`.
    pub fn parse(reference: &Reference) -> Remote {
        let (registry, repository) = match reference.repository.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), reference.repository.clone()),
        };
        let (api_host, repository) = if registry == "docker.io" {
            let repository = if repository.contains('/') {
                repository
            } else {
                format!("library/{repository}")
            };
            ("registry-1.docker.io".to_owned(), repository)
        } else {
            (registry.clone(), repository)
        };
        Remote {
            registry,
            api_host,
            repository,
            tag: reference.tag.clone(),
            digest: reference.digest.clone(),
        }
    }

    /// The tag or digest to fetch: the digest wins, then the tag, then `latest`.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    fn is_loopback(&self) -> bool {
        let host = self
            .api_host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(self.api_host.as_str(), |(h, _)| h);
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// What a transfer reports as it goes; the CLI draws it.
pub trait TransferProgress: Send + Sync {
    /// A blob of `size` bytes starts moving (`verb`: pulling, pushing).
    fn blob(&self, digest: &str, size: u64, verb: &str) -> Box<dyn BlobProgress>;
    /// A line about the whole transfer.
    fn note(&self, line: &str);
}

pub trait BlobProgress: Send {
    fn advance(&mut self, bytes: u64);
    /// The blob is done: `outcome` says how (pushed, exists, mounted…).
    fn done(&mut self, outcome: &str);
}

/// Reports nothing.
pub struct Quiet;

impl TransferProgress for Quiet {
    fn blob(&self, _: &str, _: u64, _: &str) -> Box<dyn BlobProgress> {
        Box::new(Quiet)
    }
    fn note(&self, _: &str) {}
}

impl BlobProgress for Quiet {
    fn advance(&mut self, _: u64) {}
    fn done(&mut self, _: &str) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the registry answered {status}{detail}")]
    Status {
        what: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{0}")]
    Auth(String),
    #[error("{what}: expected digest {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// The default `chunk_size`: large, because each request costs a round
/// trip, and an interrupted chunk is not lost (the registry keeps what
/// arrived, and the upload resumes from there).
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;

pub struct ClientOptions {
    /// Plain HTTP to registries that are not on loopback.
    pub insecure: bool,
    pub credentials: Credentials,
    /// Blobs moved at once.
    pub concurrency: usize,
    /// Bytes per upload request; bigger blobs go in several (PATCH) chunks.
    pub chunk_size: u64,
    /// Where unfinished uploads (to resume) and known blob locations (to
    /// mount from) are remembered.
    pub state_dir: PathBuf,
    /// Docker's `certs.d` layout: `DIR/HOST[:PORT]/*.crt` are CAs a
    /// registry's certificate may chain to, and a loopback registry with
    /// such a directory is spoken to over HTTPS.
    pub certs_dir: Option<PathBuf>,
}

/// The CAs under a `certs.d` directory, and the registries they are for.
fn registry_cas(dir: &std::path::Path) -> Result<(Vec<reqwest::Certificate>, Vec<String>)> {
    let (mut cas, mut hosts) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((cas, hosts));
    };
    for entry in entries.flatten() {
        let host_dir = entry.path();
        let Ok(files) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        let mut found = false;
        for file in files.flatten() {
            let path = file.path();
            // CAs are `*.crt`; a client certificate would be `*.cert`.
            if path.extension().is_none_or(|e| e != "crt") {
                continue;
            }
            let pem = std::fs::read(&path)
                .map_err(|e| ClientError::Invalid(format!("{}: {e}", path.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Invalid(format!("{}: {e}", path.display())))?;
            found |= !certificates.is_empty();
            cas.extend(certificates);
        }
        if found {
            hosts.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok((cas, hosts))
}

/// The access a request needs, which scopes the token asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Pull,
    Push,
}

pub struct Client {
    http: reqwest::Client,
    options: ClientOptions,
    /// Registries with a CA of their own under `certs_dir`.
    tls_hosts: Vec<String>,
    /// (registry, repository, access) → Authorization header value.
    authorizations: Mutex<HashMap<(String, String, Access), String>>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client> {
        let (cas, tls_hosts) = match &options.certs_dir {
            Some(dir) => registry_cas(dir)?,
            None => Default::default(),
        };
        let mut builder =
            reqwest::Client::builder().user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        for ca in cas {
            builder = builder.add_root_certificate(ca);
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            what: "setting up the HTTP client".into(),
            source,
        })?;
        Ok(Client {
            http,
            options,
            tls_hosts,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `http[s]://host/v2/<repository>/<path>`.
    pub(crate) fn url(&self, remote: &Remote, path: &str) -> Result<Url> {
        let own_ca = self.tls_hosts.contains(&remote.api_host);
        let scheme = if self.options.insecure || (remote.is_loopback() && !own_ca) {
            "http"
        } else {
            "https"
        };
        let text = format!(
            "{scheme}://{}/v2/{}/{path}",
            remote.api_host, remote.repository
        );
        Url::parse(&text).map_err(|e| ClientError::Invalid(format!("{text}: {e}")))
    }

    /// Sends the request `build` makes, authenticating and sending it again
    /// once if the registry asks for credentials. `build` is called again
    /// for the retry, so bodies must be re-creatable.
    pub(crate) async fn send(
        &self,
        remote: &Remote,
        access: Access,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let key = (remote.api_host.clone(), remote.repository.clone(), access);
        let cached = self.authorizations.lock().expect("lock").get(&key).cloned();
        let attempt = |authorization: Option<String>| {
            let mut request = build(&self.http);
            if let Some(value) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            request.send()
        };
        let http_error = |source| ClientError::Http {
            what: what.to_owned(),
            source,
        };
        let response = attempt(cached.clone()).await.map_err(http_error)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                ClientError::Auth(format!(
                    "{what}: {} refused the request without saying how to authenticate",
                    remote.registry
                ))
            })?;
        let authorization = auth::authorize(self, remote, access, &challenge).await?;
        self.authorizations
            .lock()
            .expect("lock")
            .insert(key, authorization.clone());
        let response = attempt(Some(authorization)).await.map_err(http_error)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let login = if self.options.credentials.get(&remote.registry).is_some() {
                "the stored credentials were refused"
            } else {
                "log in first with `berth login`"
            };
            return Err(ClientError::Auth(format!(
                "{what}: {} needs credentials: {login}",
                remote.registry
            )));
        }
        Ok(response)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Checks that `registry` accepts the stored credentials: `GET /v2/`,
    /// answering its challenge.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let probe: Reference = format!("{registry}/probe")
            .parse()
            .map_err(|e: crate::ReferenceError| ClientError::Invalid(e.to_string()))?;
        let mut remote = Remote::parse(&probe);
        remote.repository = String::new();
        let url = self.url(&remote, "")?;
        // `url` is `/v2//`; the base endpoint is `/v2/`.
        let url = url
            .join("/v2/")
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let what = format!("logging in to {registry}");
        let response = self
            .send(&remote, Access::Pull, &what, |http| http.get(url.clone()))
            .await?;
        expect(response, &what, &[StatusCode::OK]).await.map(|_| ())
    }
}

/// Turns a non-success response into an error naming the registry's own
/// error code and message when it sent them.
pub(crate) async fn expect(response: Response, what: &str, ok: &[StatusCode]) -> Result<Response> {
    if ok.contains(&response.status()) {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                " ({}: {})",
                e.get("code")?.as_str()?,
                e.get("message").and_then(|m| m.as_str()).unwrap_or("")
            ))
        })
        .unwrap_or_default();
    Err(ClientError::Status {
        what: what.to_owned(),
        status,
        detail,
    })
}

pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> Remote {
        Remote::parse(&s.parse().unwrap())
    }

    #[test]
    fn references_split_into_registry_and_repository_as_docker_does() {
        let r = remote("127.0.0.1:5000/team/app:1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert!(r.is_loopback());
        assert_eq!(r.reference(), "1");
        let r = remote("busybox");
        assert_eq!(
            (
                r.registry.as_str(),
                r.api_host.as_str(),
                r.repository.as_str()
            ),
            ("docker.io", "registry-1.docker.io", "library/busybox")
        );
        assert_eq!(r.reference(), "latest");
        let r = remote("ghcr.io/org/tool:v2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("ghcr.io", "org/tool")
        );
        assert!(!r.is_loopback());
        assert!(remote("localhost:5000/x").is_loopback());
    }
}
