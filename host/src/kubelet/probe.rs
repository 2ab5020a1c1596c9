//! Probes, as the kubelet runs them: a startup probe gates the others;
//! readiness decides whether the pod is Ready (and so gets traffic);
//! liveness failing `failureThreshold` times in a row restarts the pod.
//! httpGet succeeds on 200–399 within `timeoutSeconds`; tcpSocket on a
//! connection. For a wasm container every port is its one listener.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::spec::objects::{ContainerPort, IntOrString, Probe};

type NetnsClient = Client<crate::runtime::linux::NetnsConnector, Empty<Bytes>>;

/// Where a Linux container's probes go: its network, its ports, its pid 1.
struct LinuxTarget {
    client: NetnsClient,
    connector: crate::runtime::linux::NetnsConnector,
    ports: Vec<ContainerPort>,
    pids: crate::runtime::linux::ContainerPids,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

/// One probe of one container, and what it has seen.
pub struct Prober {
    pub container: usize,
    pub kind: Kind,
    probe: Probe,
    endpoint: SocketAddr,
    /// A Linux container's network, where its ports are; wasm containers
    /// answer on every port of their one listener, `endpoint`.
    netns: Option<LinuxTarget>,
    next: Instant,
    successes: u32,
    failures: u32,
}

/// What a probe's latest result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The probe reached its success threshold.
    Passed,
    /// The probe reached its failure threshold.
    Failed,
    /// Neither threshold was crossed.
    Unchanged,
}

impl Prober {
    pub fn new(
        container: usize,
        kind: Kind,
        probe: Probe,
        endpoint: SocketAddr,
        linux: Option<(
            crate::runtime::linux::NetnsConnector,
            Vec<ContainerPort>,
            crate::runtime::linux::ContainerPids,
        )>,
    ) -> Prober {
        let next = Instant::now() + Duration::from_secs(probe.initial_delay_seconds);
        Prober {
            container,
            kind,
            probe,
            endpoint,
            netns: linux.map(|(connector, ports, pids)| LinuxTarget {
                client: Client::builder(TokioExecutor::new()).build(connector.clone()),
                connector,
                ports,
                pids,
            }),
            next,
            successes: 0,
            failures: 0,
        }
    }

    pub fn due(&self) -> Instant {
        self.next
    }

    /// Runs the probe once and schedules the next run.
    pub async fn run(
        &mut self,
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    ) -> Verdict {
        self.next = Instant::now() + Duration::from_secs(self.probe.period_seconds);
        let timeout = Duration::from_secs(self.probe.timeout_seconds);
        let ok = if let Some(LinuxTarget {
            client,
            connector,
            ports,
            pids,
        }) = &self.netns
        {
            // Into the container's own network, on the port the probe names.
            let port = |p: &IntOrString| match p {
                IntOrString::Int(n) => u16::try_from(*n).unwrap_or(0),
                IntOrString::String(name) => ports
                    .iter()
                    .find(|c| c.name.as_deref() == Some(name))
                    .map_or(0, |c| c.container_port),
            };
            if let Some(http) = &self.probe.http_get {
                let uri = format!("http://127.0.0.1:{}{}", port(&http.port), http.path);
                match tokio::time::timeout(timeout, client.get(uri.parse().unwrap_or_default()))
                    .await
                {
                    Ok(Ok(response)) => (200..400).contains(&response.status().as_u16()),
                    _ => false,
                }
            } else if let Some(tcp) = &self.probe.tcp_socket {
                let uri: http::Uri = format!("http://127.0.0.1:{}/", port(&tcp.port))
                    .parse()
                    .unwrap_or_default();
                let mut connector = connector.clone();
                matches!(
                    tokio::time::timeout(
                        timeout,
                        tower_service::Service::call(&mut connector, uri)
                    )
                    .await,
                    Ok(Ok(_))
                )
            } else if let Some(exec) = &self.probe.exec {
                // In the container, as it runs: success is exit code 0.
                let run = async {
                    let init =
                        crate::runtime::linux::init_binary().map_err(std::io::Error::other)?;
                    tokio::process::Command::new(init)
                        .arg("exec")
                        .arg(pids.pid.to_string())
                        .arg(pids.init.to_string())
                        .args(&exec.command)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .status()
                        .await
                };
                matches!(tokio::time::timeout(timeout, run).await, Ok(Ok(s)) if s.success())
            } else {
                false
            }
        } else if let Some(http) = &self.probe.http_get {
            let uri = format!("http://{}{}", self.endpoint, http.path);
            match tokio::time::timeout(timeout, client.get(uri.parse().unwrap_or_default())).await {
                Ok(Ok(response)) => (200..400).contains(&response.status().as_u16()),
                _ => false,
            }
        } else {
            matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(self.endpoint)).await,
                Ok(Ok(_))
            )
        };
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes == self.probe.success_threshold {
                return Verdict::Passed;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures == self.probe.failure_threshold {
                return Verdict::Failed;
            }
        }
        Verdict::Unchanged
    }
}

pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}
