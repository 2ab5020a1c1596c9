//! The CLI's side of the API: one HTTP/1.1 request per call, to the daemon
//! over its unix socket, or — when `KUBECONFIG` names a file whose current
//! context is `berth` (what `berth kubeconfig` and `berth up` write) — to the
//! server that context names, over HTTPS with its CA and token. The same
//! variable that points kubectl at a berth (a remote daemon's kubeconfig,
//! or `berth up`'s) points berth's own commands at it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// Sends `method path` with an optional JSON body; returns the status and
/// the parsed JSON reply.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    call_as(socket, method, path, "application/json", body).await
}

/// [`call`] with a body of another JSON media type (a merge patch).
pub async fn call_as(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    send(socket, method, path, content_type, None, body).await
}

/// A GET of `path` in the representation `accept` names (a Table).
pub async fn get_as(
    socket: &Path,
    path: &str,
    accept: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    send(socket, "GET", path, "application/json", Some(accept), None).await
}

async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    accept: Option<&str>,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (mut sender, auth) = open(socket).await?;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = build(
        method,
        path,
        content_type,
        auth.as_deref(),
        Bytes::from(bytes),
    )?;
    if let Some(accept) = accept {
        request.headers_mut().insert(
            http::header::ACCEPT,
            http::HeaderValue::from_str(accept).context("an Accept header")?,
        );
    }
    let response = sender
        .send_request(request)
        .await
        .context("talking to the daemon")?;
    let status = response.status().as_u16();
    if status == 401 {
        anyhow::bail!(
            "the berth API refused the token (the kubeconfig's token is not the daemon's: take a fresh `berth kubeconfig`)"
        );
    }
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the daemon's answer")?
        .to_bytes();
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).context("the daemon's answer is not JSON")?
    };
    Ok((status, json))
}

fn build(
    method: &str,
    path: &str,
    content_type: &str,
    auth: Option<&str>,
    body: Bytes,
) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "berth")
        // The server names the field manager of a write after this.
        .header(
            http::header::USER_AGENT,
            concat!("berth/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONTENT_TYPE, content_type);
    if let Some(auth) = auth {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    request
        .body(Full::new(body))
        .context("building the request")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A connection to the daemon, and the Authorization header it needs.
async fn open(socket: &Path) -> anyhow::Result<(Sender, Option<String>)> {
    if let Some(remote) = Remote::from_env()? {
        return remote.connect().await;
    }
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "no berth daemon at {} (start one with `berth daemon`; for `berth up`, \
                 export the KUBECONFIG it printed)",
                socket.display()
            )
        })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the daemon")?;
    tokio::spawn(connection);
    Ok((sender, None))
}

/// The context berth writes into its kubeconfigs.
const CONTEXT: &str = "berth";

/// A berth API server a kubeconfig names.
#[derive(Debug)]
struct Remote {
    /// `https://HOST:PORT`.
    server: http::Uri,
    ca_pem: Vec<u8>,
    token: String,
    /// The kubeconfig, for messages.
    source: PathBuf,
}

/// A path a kubeconfig names, as kubectl reads it: relative to the
/// directory of the file that names it.
fn beside(kubeconfig: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match kubeconfig.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

impl Remote {
    /// The server of `KUBECONFIG`'s current context, if that context is
    /// berth's; `None` otherwise (another cluster's kubeconfig is left to
    /// kubectl).
    fn from_env() -> anyhow::Result<Option<Remote>> {
        match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(list) => Remote::from_list(&list),
            None => Ok(None),
        }
    }

    /// [`Remote::from_env`] for the kubeconfig files `list` names.
    fn from_list(list: &std::ffi::OsStr) -> anyhow::Result<Option<Remote>> {
        // As kubectl merges a list: the first file to name a thing wins.
        let mut documents = Vec::new();
        for file in std::env::split_paths(list) {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            };
            let document: serde_json::Value = yaml_serde::from_str(&text)
                .with_context(|| format!("{} is not a kubeconfig", file.display()))?;
            documents.push((file, document));
        }
        let Some(current) = documents
            .iter()
            .find_map(|(_, d)| d["current-context"].as_str().filter(|c| !c.is_empty()))
        else {
            return Ok(None);
        };
        if current != CONTEXT {
            return Ok(None);
        }
        let named = |section: &str, name: &str| {
            documents.iter().find_map(|(file, d)| {
                d[section]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|entry| entry["name"] == name)
                    .map(|entry| (file.clone(), entry.clone()))
            })
        };
        let (source, context) = named("contexts", CONTEXT).with_context(|| {
            format!("KUBECONFIG: the current context {CONTEXT:?} is not defined")
        })?;
        let context = &context["context"];
        let cluster_name = context["cluster"].as_str().unwrap_or_default();
        let user_name = context["user"].as_str().unwrap_or_default();
        let (cluster_file, cluster) = named("clusters", cluster_name).with_context(|| {
            format!(
                "{}: context {CONTEXT:?} names no cluster {cluster_name:?}",
                source.display()
            )
        })?;
        let cluster = &cluster["cluster"];
        let server: http::Uri = cluster["server"]
            .as_str()
            .with_context(|| {
                format!(
                    "{}: cluster {cluster_name:?} has no server",
                    cluster_file.display()
                )
            })?
            .parse()
            .with_context(|| {
                format!(
                    "{}: cluster {cluster_name:?}: server",
                    cluster_file.display()
                )
            })?;
        if server.scheme_str() != Some("https") || server.host().is_none() {
            anyhow::bail!(
                "{}: cluster {cluster_name:?}: berth's API is served over https, not {server}",
                cluster_file.display()
            );
        }
        let ca_pem = if let Some(data) = cluster["certificate-authority-data"].as_str() {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .with_context(|| {
                    format!(
                        "{}: certificate-authority-data is not base64",
                        cluster_file.display()
                    )
                })?
        } else if let Some(file) = cluster["certificate-authority"].as_str() {
            let file = beside(&cluster_file, file);
            std::fs::read(&file).with_context(|| format!("reading the CA {}", file.display()))?
        } else {
            anyhow::bail!(
                "{}: cluster {cluster_name:?} names no certificate authority",
                cluster_file.display()
            );
        };
        let user = named("users", user_name).map(|(file, u)| (file, u["user"].clone()));
        let token = match user.as_ref() {
            Some((_, u)) if u["token"].is_string() => {
                u["token"].as_str().unwrap_or_default().to_owned()
            }
            Some((user_file, u)) if u["tokenFile"].is_string() => {
                let file = beside(user_file, u["tokenFile"].as_str().unwrap_or_default());
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading the token file {}", file.display()))?
                    .trim()
                    .to_owned()
            }
            _ => anyhow::bail!(
                "{}: user {user_name:?} has no token (berth's API takes the admin token)",
                source.display()
            ),
        };
        Ok(Some(Remote {
            server,
            ca_pem,
            token,
            source,
        }))
    }

    async fn connect(self) -> anyhow::Result<(Sender, Option<String>)> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert =
                cert.with_context(|| format!("{}: the CA is not PEM", self.source.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{}: the CA is not usable", self.source.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = self
            .server
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = self.server.port_u16().unwrap_or(443);
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{}: {host} is not a server name", self.source.display()))?;
        let address = format!("{}:{port}", self.server.host().unwrap_or_default());
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .with_context(|| {
                format!(
                    "no berth API at {} (KUBECONFIG={})",
                    self.server,
                    self.source.display()
                )
            })?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| {
                format!(
                    "TLS with {} (KUBECONFIG={})",
                    self.server,
                    self.source.display()
                )
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("talking to the daemon")?;
        tokio::spawn(connection);
        Ok((sender, Some(format!("Bearer {}", self.token))))
    }
}

/// The error message of a failed call: a Kubernetes Status's message, or
/// the private API's error.
pub fn error_of(json: &serde_json::Value) -> String {
    json.get("message")
        .or_else(|| json.get("error"))
        .and_then(|e| e.as_str())
        .unwrap_or("the daemon refused the request")
        .to_owned()
}

/// The Kubernetes API path of `kind`'s objects: in `namespace` (all of
/// them with `None`), or the one `name`d.
pub fn path(kind: &str, namespace: Option<&str>, name: Option<&str>) -> anyhow::Result<String> {
    let resource = super::resources::by_kind(kind)
        .with_context(|| format!("berth's API has no kind {kind}"))?;
    let mut path = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    if let Some(ns) = namespace.filter(|_| resource.namespaced) {
        path.push_str(&format!("/namespaces/{ns}"));
    }
    path.push('/');
    path.push_str(resource.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    Ok(path)
}

/// Percent-encodes a query parameter's value.
pub fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `GET path`, copying the body to stdout as it arrives (for `logs -f`).
/// A refusal is returned as an error with the daemon's message.
pub async fn get_streaming(socket: &Path, path: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (mut sender, auth) = open(socket).await?;
    let request = build(
        "GET",
        path,
        "application/json",
        auth.as_deref(),
        Bytes::new(),
    )?;
    let response = sender
        .send_request(request)
        .await
        .context("talking to the daemon")?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .context("reading the daemon's answer")?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        anyhow::bail!("{}", error_of(&json));
    }
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the daemon's answer")?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data).context("writing the output")?;
            out.flush().context("writing the output")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_s_relative_paths_are_read_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        std::fs::write(dir.path().join("pki/ca.pem"), "not checked here").unwrap();
        std::fs::write(dir.path().join("pki/token"), "secret\n").unwrap();
        let config = dir.path().join("kubeconfig");
        std::fs::write(
            &config,
            "apiVersion: v1\nkind: Config\ncurrent-context: berth\n\
             clusters: [{name: berth, cluster: {server: 'https://127.0.0.1:6443', certificate-authority: pki/ca.pem}}]\n\
             users: [{name: admin, user: {tokenFile: pki/token}}]\n\
             contexts: [{name: berth, context: {cluster: berth, user: admin}}]\n",
        )
        .unwrap();
        // Read from elsewhere: the paths are the file's, not the caller's.
        let remote = Remote::from_list(config.as_os_str()).unwrap().unwrap();
        assert_eq!(remote.ca_pem, b"not checked here");
        assert_eq!(remote.token, "secret");
        assert_eq!(beside(&config, "/abs/ca.pem"), Path::new("/abs/ca.pem"));
    }
}
