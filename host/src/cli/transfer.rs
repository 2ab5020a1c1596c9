//! `berth pull`, `berth push`, `berth login`: moving images between the
//! local store and registries.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_registry::client::{Client, ClientOptions, Credentials, DEFAULT_CHUNK_SIZE, Remote};
use berth_registry::{ContentStore, Reference};
use clap::Args;

use crate::home::berth_home;
use crate::image;
use crate::spec::Quantity;

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`; loopback registries speak plain HTTP.
    reference: Reference,

    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,

    /// Upload blobs larger than this in chunks of this size (a Kubernetes
    /// quantity), for proxies that cap request sizes.
    #[arg(long, default_value = "64Mi")]
    chunk_size: Quantity,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: `HOST[:PORT]`, or `docker.io`.
    registry: String,

    #[arg(short = 'u', long = "username")]
    username: String,

    /// Read the password from stdin (otherwise from BERTH_PASSWORD).
    #[arg(long)]
    password_stdin: bool,

    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
}

fn credentials_file() -> std::path::PathBuf {
    berth_home().join("auth.json")
}

fn client(insecure: bool, credentials: Credentials, chunk_size: u64) -> anyhow::Result<Client> {
    Ok(Client::new(ClientOptions {
        insecure,
        credentials,
        concurrency: 4,
        chunk_size,
        state_dir: berth_home().join("client"),
        certs_dir: Some(berth_home().join("certs.d")),
    })?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn stored_credentials() -> anyhow::Result<Credentials> {
    Credentials::load(&credentials_file()).map_err(anyhow::Error::msg)
}

pub fn pull(args: TransferArgs) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    let remote = Remote::parse(&args.reference);
    let client = client(
        args.insecure,
        stored_credentials()?,
        chunk_size(&args.chunk_size)?,
    )?;
    // Named in the local store as the user wrote it, so `berth run` takes
    // the same reference; a digest-only pull is named by its digest.
    let local_name = match (&args.reference.tag, &args.reference.digest) {
        (None, Some(digest)) => format!("{}@{digest}", args.reference.repository),
        _ => args.reference.tagged_name(),
    };
    let progress = super::progress::transfers("berth pull");
    let pulled = runtime()?
        .block_on(client.pull(&store, &remote, &local_name, progress.as_ref()))
        .with_context(|| format!("pulling {}", args.reference))?;
    drop(progress);
    println!("{local_name} {}", pulled.digest);
    Ok(ExitCode::SUCCESS)
}

pub fn push(args: TransferArgs) -> anyhow::Result<ExitCode> {
    let store = ContentStore::open(image::store_dir())?;
    let descriptor = image::lookup(&store, &args.reference).with_context(|| {
        format!(
            "no image {} in the local store to push (name one with `berth tag`)",
            args.reference
        )
    })?;
    let remote = Remote::parse(&args.reference);
    let client = client(
        args.insecure,
        stored_credentials()?,
        chunk_size(&args.chunk_size)?,
    )?;
    let progress = super::progress::transfers("berth push");
    let digest = runtime()?
        .block_on(client.push(&store, &descriptor, &remote, progress.as_ref()))
        .with_context(|| format!("pushing {}", args.reference))?;
    drop(progress);
    println!("{} {digest}", args.reference);
    Ok(ExitCode::SUCCESS)
}

pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from stdin")?;
        text.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        std::env::var("BERTH_PASSWORD")
            .context("give the password on stdin with --password-stdin, or in BERTH_PASSWORD")?
    };
    let mut credentials = stored_credentials()?;
    credentials.set(&args.registry, &args.username, &password);
    let client = client(args.insecure, credentials.clone(), DEFAULT_CHUNK_SIZE)?;
    runtime()?
        .block_on(client.check_login(&args.registry))
        .with_context(|| format!("logging in to {}", args.registry))?;
    credentials
        .save(&credentials_file())
        .map_err(anyhow::Error::msg)?;
    println!("logged in to {}", args.registry);
    Ok(ExitCode::SUCCESS)
}

fn chunk_size(quantity: &Quantity) -> anyhow::Result<u64> {
    quantity
        .to_bytes()
        .filter(|b| *b >= 1)
        .with_context(|| format!("--chunk-size {quantity} is not a whole number of bytes"))
}
