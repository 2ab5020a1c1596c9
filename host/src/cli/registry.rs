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
        // Scripts and tests read this line to learn the port.
        println!(
            "berth: registry serving {} on http://{addr}/",
            root.display()
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving")?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
