//! `berth run FILE.wasm`: serve one component in the foreground, like
//! `wasmtime serve`, with only the capabilities the flags grant.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use berth_registry::{ContentStore, Reference};

use crate::home;
use crate::image;
use crate::image::materialize::materialize;
use crate::image::model::Image;
use crate::runtime::wasm::{WasmRuntime, WasmRuntimeConfig};
use crate::runtime::{Capabilities, DirGrant, Limits, OutboundRule, Runtime, WorkloadSpec};
use crate::spec::Quantity;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to serve: a .wasm file exporting wasi:http/incoming-handler, or an
    /// image in the local store (NAME[:TAG]), whose bundles are mounted read-only.
    component: String,

    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Give the guest an environment variable (repeatable). It sees no others.
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Mount a host directory in the guest, read-only unless `:rw` (repeatable).
    #[arg(long = "dir", value_name = "HOST:GUEST[:ro|:rw]")]
    dirs: Vec<DirGrant>,

    /// Allow outbound HTTP to HOST (any port) or HOST:PORT; `*` allows any but
    /// this machine's own addresses, which must be named (repeatable).
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]")]
    outbound: Vec<OutboundRule>,

    /// Allow TCP connections (wasi:sockets) to HOST:PORT, and name lookups
    /// of HOST (repeatable). Nothing else: no listening, no UDP.
    #[arg(long = "allow-tcp", value_name = "HOST:PORT")]
    tcp: Vec<crate::runtime::TcpGrant>,

    /// Linear memory one request's instance may use (a Kubernetes quantity;
    /// 128Mi unless given). For a Linux image: the container's memory
    /// limit (none unless given, as in Docker).
    #[arg(long)]
    memory: Option<Quantity>,

    /// The share of the CPU it may use over all its requests, in cores
    /// (`0.5`, or `500m` as Kubernetes writes it); past it, guest code is
    /// paused, not failed. Unlimited unless given, as in Docker.
    #[arg(long)]
    cpus: Option<Quantity>,

    /// CPU time one request may use (30s unless given); for a command, the
    /// whole run's (unlimited unless given).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,

    /// A command reads berth's standard input (else it reads nothing), as
    /// `docker run -i`.
    #[arg(short = 'i', long)]
    interactive: bool,

    /// Wall-clock time a request may wait for the guest's response to start
    /// (then 504), whatever the guest is waiting on.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    response_timeout: Duration,

    /// Requests served at once; more wait briefly, then get 503.
    #[arg(long, default_value_t = Limits::default().max_concurrency)]
    max_concurrency: usize,

    /// Serve Prometheus metrics at http://ADDR/metrics: requests, the
    /// guest's CPU time and memory, the process.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,

    /// Linux images: `private` runs the container's root as an unprivileged
    /// host id (a user namespace of its own, where the host allows it);
    /// `host` with the host's ids, as Docker does by default.
    #[arg(long, value_enum, default_value = "private")]
    userns: Userns,

    /// Linux images: processes the container may run at once.
    #[arg(long, default_value_t = 1024)]
    pids_limit: u64,

    /// Linux images: publish the container's port on the host, as `docker
    /// run -p` does: `[IP:]HOST:CONTAINER[/tcp]`, on all addresses unless
    /// an IP is given (repeatable). A wasm component listens on --listen.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CONTAINER")]
    publish: Vec<Publish>,

    /// A command component's arguments; for a Linux image, the command to
    /// run instead of the image's Cmd (its Entrypoint stays), as `docker
    /// run IMAGE CMD...` does.
    #[arg(last = true, value_name = "ARGS")]
    command: Vec<String>,
}

/// What `berth run` was asked to serve, resolved to a component file and
/// the image's bundle mounts (none for a plain file).
struct Target {
    name: String,
    component: PathBuf,
    mounts: Vec<DirGrant>,
}

/// A path that exists, or looks like one, is a file; anything else must be
/// an image in the local store.
fn resolve_target(arg: &str) -> anyhow::Result<Target> {
    let path = Path::new(arg);
    if path.exists() || arg.ends_with(".wasm") || arg.starts_with('.') || arg.starts_with('/') {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "component".to_owned());
        return Ok(Target {
            name,
            component: path.to_owned(),
            mounts: Vec::new(),
        });
    }
    let reference: Reference = arg
        .parse()
        .with_context(|| format!("{arg} is neither a file nor an image reference"))?;
    let store = ContentStore::open(image::store_dir())?;
    let descriptor = image::lookup(&store, &reference).map_err(|_| {
        anyhow::anyhow!(
            "no file {arg} and no image {} in the local store (see `berth images`; build one with `berth build`)",
            reference.tagged_name()
        )
    })?;
    let loaded = Image::resolve(&store, &descriptor)?;
    let ready = materialize(&store, &image::images_dir(), &loaded)
        .with_context(|| format!("preparing image {}", reference.tagged_name()))?;
    let mounts = ready
        .mounts
        .into_iter()
        .map(|(host, guest)| DirGrant {
            host,
            guest,
            writable: false,
        })
        .collect();
    let name = short_name(&reference);
    Ok(Target {
        name,
        component: ready.component,
        mounts,
    })
}

/// The image `arg` names, if it is a Linux image in the local store.
fn linux_image(arg: &str) -> anyhow::Result<Option<(Reference, Image)>> {
    if Path::new(arg).exists() || arg.ends_with(".wasm") {
        return Ok(None);
    }
    let Ok(reference) = arg.parse::<Reference>() else {
        return Ok(None);
    };
    let store = ContentStore::open(image::store_dir())?;
    let Ok(descriptor) = image::lookup(&store, &reference) else {
        return Ok(None);
    };
    let loaded = Image::resolve(&store, &descriptor)?;
    Ok((loaded.platform.os == "linux").then_some((reference, loaded)))
}

/// `berth run IMAGE [-- CMD...]` for a Linux image: the container in the
/// foreground like `docker run --rm`, its output on the terminal, its exit
/// code berth's. Ctrl-C or SIGTERM is passed on to it.
fn run_linux(args: &RunArgs, reference: &Reference, image: &Image) -> anyhow::Result<ExitCode> {
    if !args.outbound.is_empty() || !args.tcp.is_empty() {
        anyhow::bail!(
            "--allow-outbound and --allow-tcp are for wasm guests; {} is a Linux image, whose \
             container has only loopback",
            reference.tagged_name()
        );
    }
    use crate::runtime::linux::{self, ContainerSpec, Output, cgroup, config::Network, plan};
    let store = ContentStore::open(image::store_dir())?;
    let rootfs = crate::image::materialize::materialize_rootfs(&store, &image::images_dir(), image)
        .with_context(|| format!("preparing image {}", reference.tagged_name()))?;
    let run = &image.run;
    let name = short_name(reference);
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix).expect("the OS random source");
    let id = format!("{name}-{}", hex::encode(suffix));
    let command = (!args.command.is_empty()).then_some(args.command.as_slice());
    let memory = match &args.memory {
        None => None,
        Some(q) => Some(
            q.to_bytes()
                .with_context(|| format!("--memory {q} is too large"))?,
        ),
    };
    let spec = ContainerSpec {
        user_namespace: match args.userns {
            Userns::Private => linux::UserIds::Private,
            Userns::Host => linux::UserIds::Host,
        },
        id: id.clone(),
        hostname: name.clone(),
        rootfs,
        prepared_root: false,
        state_dir: home::berth_home().join("containers").join(&id),
        args: plan::command_line(
            run.entrypoint.as_deref().unwrap_or_default(),
            run.cmd.as_deref().unwrap_or_default(),
            None,
            command,
        ),
        env: plan::environment(run.env.as_deref().unwrap_or_default(), &args.env, &name),
        cwd: run.working_dir.clone().unwrap_or_default(),
        user: linux::config::User::of_image(run.user.as_deref().unwrap_or_default()),
        capabilities: plan::default_capabilities(),
        read_only_root: false,
        network: Network::Own,
        joined: Vec::new(),
        mounts: args
            .dirs
            .iter()
            .map(|d| linux::config::BindMount {
                source: d.host.clone(),
                target: d.guest.clone(),
                writable: d.writable,
            })
            .collect(),
        cgroup: None,
        limits: cgroup::Limits {
            memory,
            pids: Some(args.pids_limit),
            cpu_millis: cpu_millis(&args.cpus)?,
        },
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        // Bound before the container starts, so a port in use is said
        // before anything runs.
        let mut published = Vec::new();
        for publish in &args.publish {
            let listener = crate::router::bind_published(publish.host)
                .with_context(|| format!("publishing {} (-p)", publish.host))?;
            published.push((listener, publish.container));
        }
        let mut container = linux::start(&spec, Output::Inherit)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", reference.tagged_name()))?;
        let stop_publishing = tokio_util::sync::CancellationToken::new();
        let _stop_publishing = stop_publishing.clone().drop_guard();
        for (listener, port) in published {
            let connector = linux::NetnsConnector::new(Some(container.netns_path()))?;
            let name = format!(
                "published port {} (container port {port})",
                listener.local_addr().map_or(0, |a| a.port())
            );
            tokio::spawn(crate::router::publish(
                name,
                listener,
                move || connector.connect(port),
                |_| true,
                stop_publishing.clone(),
            ));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let exit = loop {
            tokio::select! {
                exit = container.wait() => break exit,
                _ = tokio::signal::ctrl_c() => container.signal(rustix::process::Signal::INT),
                _ = term.recv() => container.signal(rustix::process::Signal::TERM),
            }
        };
        container.remove();
        // As docker run: the container's code, 125 when it could not be
        // set up and 127 when its program could not be run, with why.
        if let Some(error) = &exit.error {
            eprintln!("berth: error: {}: {error}", reference.tagged_name());
        }
        if exit.oom_killed {
            eprintln!(
                "berth: {} was killed: out of memory (OOMKilled)",
                reference.tagged_name()
            );
        }
        Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(255)))
    })
}

/// A port published on the host: `[IP:]HOST:CONTAINER[/tcp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    host: SocketAddr,
    container: u16,
}

impl std::str::FromStr for Publish {
    type Err = String;

    fn from_str(s: &str) -> Result<Publish, String> {
        let spec = match s.rsplit_once('/') {
            Some((spec, "tcp")) => spec,
            Some((_, protocol)) => {
                return Err(format!("{s:?}: {protocol} is not supported (TCP only)"));
            }
            None => s,
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| format!("{s:?}: {p:?} is not a port (1–65535)"))
        };
        let (host, container) = spec
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected [IP:]HOST:CONTAINER"))?;
        let container = port(container)?;
        let host = match host.rsplit_once(':') {
            // [v6]:port or v4:port
            Some((ip, host_port)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip: std::net::IpAddr = ip
                    .parse()
                    .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
                SocketAddr::new(ip, port(host_port)?)
            }
            None => SocketAddr::from(([0, 0, 0, 0], port(host)?)),
        };
        Ok(Publish { host, container })
    }
}

/// An image's name without its registry and path: `busybox` of
/// `registry.example/tools/busybox:1`.
fn short_name(reference: &Reference) -> String {
    reference
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&reference.repository)
        .to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Userns {
    Private,
    Host,
}

fn cpu_millis(cpus: &Option<Quantity>) -> anyhow::Result<Option<u64>> {
    cpus.as_ref()
        .map(|q| match u64::try_from(q.millis()) {
            Ok(0) => anyhow::bail!("--cpus {q}: must be at least 1m"),
            Ok(m) => Ok(m),
            Err(_) => anyhow::bail!("--cpus {q} is too large"),
        })
        .transpose()
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected K=V")),
    }
}

/// `berth run TOOL.wasm [-- ARGS]`: the command to completion, as
/// `wasmtime run` (and `docker run --rm`) runs one: its output on berth's,
/// its exit code berth's; a trap or a limit is named on stderr.
async fn run_command(
    runtime: &WasmRuntime,
    mut spec: WorkloadSpec,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    // The whole run's CPU time: none unless asked, as a shell gives.
    spec.limits.cpu_time = args.timeout.unwrap_or(Duration::MAX);
    let invocation = crate::runtime::wasm::Invocation {
        args: argv(args, &spec.name),
        stdin: args.interactive,
    };
    let finished = tokio::select! {
        finished = runtime.run_command(spec, invocation) => finished?,
        // As a shell's child: Ctrl-C ends it, with the signal's status.
        _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(130)),
    };
    if let Some(failure) = &finished.failure {
        eprintln!("berth: {}: {failure}", args.component);
    }
    Ok(ExitCode::from(
        u8::try_from(finished.code & 0xff).unwrap_or(1),
    ))
}

/// A command's argv: the component's file name, then the arguments.
fn argv(args: &RunArgs, name: &str) -> Vec<String> {
    let name = Path::new(&args.component)
        .file_name()
        .map_or_else(|| name.to_owned(), |n| n.to_string_lossy().into_owned());
    std::iter::once(name)
        .chain(args.command.iter().cloned())
        .collect()
}

/// The async runtime and the wasm runtime for `berth run`: a server's, or
/// a single run's (one thread, no instance pool). The wasm runtime is
/// built outside the async runtime and is to be dropped after it: its
/// epoch ticker is what makes a still-spinning guest yield, so the async
/// runtime's shutdown can drop that guest's task instead of waiting on it
/// forever.
fn runtimes(serving: bool) -> anyhow::Result<(tokio::runtime::Runtime, WasmRuntime)> {
    let tokio = if serving {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .context("starting the async runtime")?;
    let runtime = WasmRuntime::new(WasmRuntimeConfig {
        cache_dir: Some(home::compile_cache_dir()),
        pooled: serving,
    })?;
    Ok((tokio, runtime))
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some((reference, image)) = linux_image(&args.component)? {
        return run_linux(&args, &reference, &image);
    }
    if !args.publish.is_empty() {
        anyhow::bail!(
            "-p publishes a Linux container's port; a wasm component is served on --listen ADDR"
        );
    }
    let memory = match &args.memory {
        None => Limits::default().memory,
        Some(q) => q
            .to_bytes()
            .with_context(|| format!("--memory {q} is too large"))?,
    };
    let target = resolve_target(&args.component)?;
    let mut dirs = target.mounts;
    dirs.extend(args.dirs.iter().cloned());
    let mut spec = WorkloadSpec {
        name: target.name,
        component: target.component,
        args: Vec::new(),
        invoked: false,
        capabilities: Capabilities {
            env: args.env.clone(),
            dirs,
            outbound: args.outbound.clone(),
            services: None,
            tcp: args.tcp.clone(),
        },
        log: None,
        limits: Limits {
            memory,
            cpu_time: args.timeout.unwrap_or(Limits::default().cpu_time),
            cpu_millis: cpu_millis(&args.cpus)?,
            response_timeout: args.response_timeout,
            max_concurrency: args.max_concurrency.max(1),
            ..Limits::default()
        },
    };

    // Arguments say it is a command: run it, compiled once, on one thread
    // and without the instance pool, whose setup would only slow a single
    // run down. Without any, what it exports decides.
    let invoked = !args.command.is_empty();
    if invoked {
        let (tokio, runtime) = runtimes(false)?;
        let finished = tokio.block_on(run_command(&runtime, spec.clone(), &args));
        let not_command = matches!(
            finished.as_ref().map_err(|e| e.downcast_ref()),
            Err(Some(crate::runtime::RuntimeError::NotCommand { .. }))
        );
        // Arguments to a component of both worlds: its `run`, beside
        // serving it.
        let both = not_command && runtime.worlds(&spec.component)?.command;
        tokio.shutdown_timeout(Duration::from_secs(1));
        drop(runtime);
        if not_command && !both {
            anyhow::bail!(
                "{} is an HTTP component: it is served, and takes no arguments (a command \
                 component, one exporting wasi:cli/run, does)",
                args.component
            );
        }
        if !both {
            return finished;
        }
        spec.args = argv(&args, &spec.name);
        spec.invoked = true;
    }
    let (tokio, runtime) = runtimes(true)?;
    if !invoked {
        let worlds = runtime.worlds(&spec.component)?;
        if worlds.command && !worlds.http {
            let finished = tokio.block_on(run_command(&runtime, spec, &args));
            tokio.shutdown_timeout(Duration::from_secs(1));
            drop(runtime);
            return finished;
        }
    }
    let served = tokio.block_on(async {
        let shutdown = super::shutdown_on_signal()?;

        let name = spec.name.clone();
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        let metrics_listener = match args.metrics {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listening for metrics on {address}"))?,
            ),
            None => None,
        };
        let announce = || -> anyhow::Result<()> {
            // Scripts and tests read this line (the first) to learn the port.
            println!("berth: serving {} on http://{addr}/", args.component);
            if let Some(listener) = &metrics_listener {
                println!(
                    "berth: metrics on http://{}/metrics",
                    listener.local_addr()?
                );
            }
            Ok(())
        };
        // Started before berth says it serves, so a component that cannot
        // be is an error alone; but a `run` beside serving starts after,
        // so that what it prints comes after berth's lines.
        let workload = if invoked {
            announce()?;
            runtime.start(spec).await?
        } else {
            let workload = runtime.start(spec).await?;
            announce()?;
            workload
        };
        let counted = metrics_listener.map(|listener| {
            let mut metrics = crate::metrics::Metrics::new();
            metrics.register_collector(Box::new(crate::metrics::WorkloadCollector {
                name: name.clone(),
                workload: workload.clone(),
            }));
            let route = std::sync::Arc::new(metrics.http.route("", &name));
            tokio::spawn(std::sync::Arc::new(metrics).serve(listener, shutdown.clone()));
            route
        });
        // A `run` beside serving is the process's life, as a container's:
        // when it ends, serving drains and berth exits with its code.
        let ran = std::sync::Arc::new(std::sync::OnceLock::new());
        if invoked {
            let (workload, shutdown, ran) = (workload.clone(), shutdown.clone(), ran.clone());
            tokio::spawn(async move {
                let _ = ran.set(workload.exited().await);
                shutdown.cancel();
            });
        }
        crate::router::serve(listener, workload, shutdown, args.drain_timeout, counted).await;
        let Some(exited) = ran.get() else {
            // Served to the end; or a `run` ended by a signal, as a
            // shell's child: with the status a command has then.
            return anyhow::Ok(if invoked {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            });
        };
        if let Some(detail) = &exited.detail {
            eprintln!("berth: {}: {detail}", args.component);
        }
        anyhow::Ok(ExitCode::from(
            u8::try_from(exited.code & 0xff).unwrap_or(1),
        ))
    });
    tokio.shutdown_timeout(Duration::from_secs(1));
    drop(runtime);
    served
}

#[cfg(test)]
mod tests {
    use super::Publish;

    #[test]
    fn published_ports_read_as_docker_writes_them() {
        let p = |s: &str| s.parse::<Publish>();
        let all = p("8080:80").unwrap();
        assert_eq!(
            (all.host.to_string(), all.container),
            ("0.0.0.0:8080".into(), 80)
        );
        let local = p("127.0.0.1:8080:80/tcp").unwrap();
        assert_eq!(local.host.to_string(), "127.0.0.1:8080");
        let v6 = p("[::1]:8080:80").unwrap();
        assert_eq!(v6.host.to_string(), "[::1]:8080");
        assert!(p("80").unwrap_err().contains("[IP:]HOST:CONTAINER"));
        assert!(p("8080:0").unwrap_err().contains("not a port"));
        assert!(p("host:8080:80").unwrap_err().contains("not an IP address"));
        assert!(p("53:53/udp").unwrap_err().contains("TCP only"));
    }
}
