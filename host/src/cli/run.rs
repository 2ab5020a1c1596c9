//! `berth run FILE.wasm`: serve one component in the foreground, like
//! `wasmtime serve`, with only the capabilities the flags grant.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::home;
use crate::runtime::wasm::{WasmRuntime, WasmRuntimeConfig};
use crate::runtime::{Capabilities, DirGrant, Limits, OutboundRule, Runtime, WorkloadSpec};
use crate::spec::Quantity;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component to serve: a .wasm file exporting wasi:http/incoming-handler.
    component: PathBuf,

    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Give the guest an environment variable (repeatable). It sees no others.
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Mount a host directory in the guest, read-only unless `:rw` (repeatable).
    #[arg(long = "dir", value_name = "HOST:GUEST[:ro|:rw]")]
    dirs: Vec<DirGrant>,

    /// Allow outbound HTTP to HOST (any port) or HOST:PORT; `*` allows any (repeatable).
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]")]
    outbound: Vec<OutboundRule>,

    /// Linear memory one request's instance may use (a Kubernetes quantity).
    #[arg(long, default_value = "128Mi")]
    memory: Quantity,

    /// CPU time one request may use.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Requests served at once; more wait briefly, then get 503.
    #[arg(long, default_value_t = Limits::default().max_concurrency)]
    max_concurrency: usize,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected K=V")),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let memory = args
        .memory
        .to_bytes()
        .with_context(|| format!("--memory {} is too large", args.memory))?;
    let name = args
        .component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "component".to_owned());
    let spec = WorkloadSpec {
        name,
        component: args.component.clone(),
        capabilities: Capabilities {
            env: args.env,
            dirs: args.dirs,
            outbound: args.outbound,
        },
        limits: Limits {
            memory,
            cpu_time: args.timeout,
            max_concurrency: args.max_concurrency.max(1),
            ..Limits::default()
        },
    };

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Built outside the async runtime and dropped after it: its epoch ticker
    // is what makes a still-spinning guest yield, so the runtime's shutdown
    // below can drop that guest's task instead of waiting on it forever.
    let runtime = WasmRuntime::new(WasmRuntimeConfig {
        cache_dir: Some(home::compile_cache_dir()),
    })?;
    let served = tokio.block_on(async {
        // Watch for signals before announcing the address, so a SIGTERM sent
        // as soon as the line appears drains instead of killing the process.
        let shutdown = CancellationToken::new();
        let term = signal(SignalKind::terminate()).context("watching for SIGTERM")?;
        tokio::spawn(cancel_on_signal(shutdown.clone(), term));

        let workload = runtime.start(spec).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        // Scripts and tests read this line to learn the port.
        println!(
            "berth: serving {} on http://{addr}/",
            args.component.display()
        );
        crate::router::serve(listener, workload, shutdown, args.drain_timeout).await;
        anyhow::Ok(ExitCode::SUCCESS)
    });
    tokio.shutdown_timeout(Duration::from_secs(1));
    drop(runtime);
    served
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(token: CancellationToken, mut term: Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    token.cancel();
}
