//! `berth registry serve`: berth's OCI distribution registry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_registry::server::{Auth, ServerConfig};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve an OCI Distribution 1.1 registry in the foreground.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,

    /// Where blobs, manifests and uploads are kept (default: $BERTH_HOME/registry).
    #[arg(long)]
    root: Option<PathBuf>,

    /// Require credentials: an htpasswd file with bcrypt entries (`htpasswd -B`).
    #[arg(long, value_name = "HTPASSWD")]
    auth: Option<PathBuf>,

    /// A user of the htpasswd file who may pull but not push (repeatable).
    #[arg(long = "pull-only", value_name = "USER", requires = "auth")]
    pull_only: Vec<String>,

    /// Serve HTTPS with this certificate chain (PEM); read again whenever
    /// it or the key changes, so a renewed certificate needs no restart.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// How often the certificate files are looked at for a change.
const TLS_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The certificate and key files a registry serves HTTPS with.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    fn load(&self) -> anyhow::Result<std::sync::Arc<rustls::sign::CertifiedKey>> {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        crate::router::certified_key(&read(&self.cert)?, &read(&self.key)?)
            .map_err(|e| anyhow::anyhow!("{} and {}: {e}", self.cert.display(), self.key.display()))
    }

    /// Which files the paths name and when they last changed: a new pair
    /// is read when this differs (a file replaced by rename is another
    /// inode; one rewritten in place has a new ctime, whatever its mtime).
    fn stamp(&self) -> Option<[(u64, i64, i64, u64); 2]> {
        use std::os::unix::fs::MetadataExt as _;
        let stamp = |path: &PathBuf| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.ino(), meta.ctime(), meta.ctime_nsec(), meta.len()))
        };
        Some([stamp(&self.cert)?, stamp(&self.key)?])
    }

    /// Swaps in the files' certificate whenever they change, until
    /// `shutdown`. A pair that does not load (half written, mismatched)
    /// keeps the last good one, with a warning.
    async fn watch(
        self,
        mut seen: Option<[(u64, i64, i64, u64); 2]>,
        certificates: std::sync::Arc<crate::router::Certificates>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TLS_RELOAD_CHECK) => {}
            }
            let now = self.stamp();
            if now == seen {
                continue;
            }
            match self.load() {
                Ok(key) => {
                    certificates.replace(crate::router::CertificateSet {
                        fallback: Some(key),
                        ..Default::default()
                    });
                    tracing::info!("serving the new certificate from {}", self.cert.display());
                    seen = now;
                }
                Err(e) => tracing::warn!("keeping the current certificate: {e:#}"),
            }
        }
    }
}

pub fn registry(command: RegistryCommand) -> anyhow::Result<ExitCode> {
    match command {
        RegistryCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let root = args
        .root
        .unwrap_or_else(|| crate::home::berth_home().join("registry"));
    let auth = match &args.auth {
        Some(path) => Some(Auth::from_htpasswd(path, &args.pull_only).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    // A bad certificate fails the start, not every handshake after it. The
    // files' stamp is taken first: a change while they load is seen later.
    let stamp = tls.as_ref().and_then(TlsFiles::stamp);
    let certificates = match &tls {
        Some(files) => {
            let certificates = std::sync::Arc::new(crate::router::Certificates::default());
            certificates.replace(crate::router::CertificateSet {
                fallback: Some(files.load()?),
                ..Default::default()
            });
            Some(certificates)
        }
        None => None,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        let shutdown = super::shutdown_on_signal()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        let counted = std::sync::Arc::new(berth_registry::server::Metrics::default());
        let mut metrics = crate::metrics::Metrics::new();
        counted.register(metrics.registry_mut(), root.clone());
        let metrics = std::sync::Arc::new(metrics);
        let config = ServerConfig {
            root: root.clone(),
            auth,
            metrics: counted,
        };
        // `/metrics` beside the registry's API, without its auth (as
        // distribution serves its debug port's): counts, never contents.
        let router = berth_registry::server::router(config)
            .with_context(|| format!("opening the registry at {}", root.display()))?
            .merge(metrics.router());
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Scripts and tests read this line to learn the port.
        println!(
            "berth: registry serving {} on {scheme}://{addr}/",
            root.display()
        );
        let (Some(files), Some(certificates)) = (tls, certificates) else {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .context("serving")?;
            return anyhow::Ok(ExitCode::SUCCESS);
        };
        tokio::spawn(files.watch(stamp, certificates.clone(), shutdown.clone()));
        let acceptor =
            tokio_rustls::TlsAcceptor::from(crate::router::tls_server_config(certificates));
        berth_serve::accept_with(
            listener,
            Some(acceptor),
            shutdown,
            std::time::Duration::from_secs(30),
            berth_serve::HEADER_READ_TIMEOUT,
            move |request, _peer| {
                use http_body_util::BodyExt as _;
                use tower_service::Service as _;
                let mut router = router.clone();
                let mut request = request;
                // HTTP/2 names the host in the URI alone; the registry's
                // token realm is built from the Host header.
                if !request.headers().contains_key(http::header::HOST)
                    && let Some(host) = request
                        .uri()
                        .authority()
                        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
                {
                    request.headers_mut().insert(http::header::HOST, host);
                }
                request
                    .headers_mut()
                    .insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
                async move {
                    let response = match router.call(request.map(axum::body::Body::new)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    response.map(|body| body.map_err(Into::into).boxed_unsync())
                }
            },
        )
        .await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
