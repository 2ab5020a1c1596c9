//! The `berth` command line. Parses arguments, runs the command, and turns
//! any error into one line on stderr and a non-zero exit code.

mod apply;
mod build;
mod dashboard;
mod describe;
mod images;
mod kube;
mod kubeconfig;
mod progress;
mod registry;
mod rollout;
mod run;
mod transfer;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM, for a foreground server. The
/// handlers are installed now: create it before announcing readiness, so a
/// SIGTERM sent as soon as the line appears drains instead of killing the
/// process. Call inside the async runtime.
fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate()).context("watching for SIGTERM")?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        cancel.cancel();
    });
    Ok(token)
}

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A WebAssembly-first microservice host"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command serves connections (and must live through a
    /// peer closing one) rather than printing for a reader who may stop
    /// reading (`berth inspect … | head`).
    pub fn serves(&self) -> bool {
        matches!(
            self.command,
            Command::Run(_) | Command::Daemon(_) | Command::Up(_) | Command::Registry { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a wasi:http component (a .wasm file or an image) in the foreground.
    Run(run::RunArgs),
    /// Build an image from a directory with a berth.toml.
    Build(build::BuildArgs),
    /// List the images in the local store.
    Images,
    /// Show an image's digest, layers and config as JSON.
    Inspect {
        reference: berth_registry::Reference,
    },
    /// Give an image another name.
    Tag {
        source: berth_registry::Reference,
        target: berth_registry::Reference,
    },
    /// Remove image names, and the blobs no other name needs.
    Rmi {
        #[arg(required = true)]
        references: Vec<berth_registry::Reference>,
    },
    /// Write images to an OCI archive.
    Save {
        #[arg(required = true)]
        references: Vec<berth_registry::Reference>,
        #[arg(short = 'o', long = "output")]
        output: std::path::PathBuf,
    },
    /// Read images from an OCI archive.
    Load {
        #[arg(short = 'i', long = "input")]
        input: std::path::PathBuf,
    },
    /// Manage the image store.
    Image {
        #[command(subcommand)]
        command: images::ImageCommand,
    },
    /// Fetch an image from a registry into the local store.
    Pull(transfer::TransferArgs),
    /// Send an image from the local store to a registry.
    Push(transfer::TransferArgs),
    /// Store credentials for a registry (checked first).
    Login(transfer::LoginArgs),
    /// Run the control daemon in the foreground: the API `apply`, `get` and
    /// `delete` use, the controllers, and the pods.
    Daemon(kube::DaemonArgs),
    /// Print the daemon's kubeconfig (`--path`: where it is; `--merge`: add
    /// it to ~/.kube/config).
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Build, apply and run a directory of manifests in the foreground until Ctrl-C.
    Up(kube::UpArgs),
    /// Create or update objects from manifests, all or nothing.
    Apply(apply::ApplyArgs),
    /// List objects, as kubectl does.
    Get(kube::GetArgs),
    /// Delete objects by kind and name, or those in manifests.
    Delete(kube::DeleteArgs),
    /// Set a deployment's replica count.
    Scale(kube::ScaleArgs),
    /// Create a deployment from an image, as kubectl create deployment does.
    Create(apply::CreateArgs),
    /// Show an object's state and its events.
    Describe(describe::DescribeArgs),
    /// Print a one-time sign-in link to the web dashboard.
    Dashboard(dashboard::DashboardArgs),
    /// List the containers the daemon runs.
    Ps,
    /// Print what a pod's container wrote to stdout and stderr.
    Logs(kube::LogsArgs),
    /// Watch, list or undo a deployment's rollouts.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// berth's own OCI registry.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
}

/// Runs the parsed command line; the binary's whole `main`.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Build(args) => build::build(args),
        Command::Images => images::images(),
        Command::Inspect { reference } => images::inspect(reference),
        Command::Tag { source, target } => images::tag(source, target),
        Command::Rmi { references } => images::rmi(references),
        Command::Image { command } => images::image(command),
        Command::Save { references, output } => images::save(references, &output),
        Command::Load { input } => images::load(&input),
        Command::Registry { command } => registry::registry(command),
        Command::Daemon(args) => kube::daemon(args),
        Command::Up(args) => kube::up(args),
        Command::Kubeconfig(args) => kubeconfig::kubeconfig(args),
        Command::Apply(args) => apply::apply(args),
        Command::Get(args) => kube::get(args),
        Command::Delete(args) => kube::delete(args),
        Command::Scale(args) => kube::scale(args),
        Command::Create(args) => apply::create(args),
        Command::Describe(args) => describe::describe(args),
        Command::Dashboard(args) => dashboard::dashboard(args),
        Command::Ps => kube::ps(),
        Command::Logs(args) => kube::logs(args),
        Command::Rollout { command } => rollout::rollout(command),
        Command::Pull(args) => transfer::pull(args),
        Command::Push(args) => transfer::push(args),
        Command::Login(args) => transfer::login(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Compiles a freshly built component into the compile cache, so its first
/// replica starts at once. Only a warning if that fails: the image is built,
/// and starting it will say what is wrong.
fn precompile(component: &std::path::Path) {
    let runtime = crate::runtime::wasm::WasmRuntime::new(crate::runtime::wasm::WasmRuntimeConfig {
        cache_dir: Some(crate::home::compile_cache_dir()),
        pooled: true,
    });
    if let Err(e) = runtime.and_then(|r| r.precompile(component)) {
        tracing::warn!(
            "compiling {} ahead of its first start: {e}",
            component.display()
        );
    }
}
