//! A pod's way to Services: connections from the pod's network namespace
//! to any address of the service network are redirected, in that namespace
//! only, to one berth listener there, which learns the address the
//! connection was for from conntrack (`SO_ORIGINAL_DST`), as a transparent
//! proxy does. One nftables rule per pod, whatever the Services: none is
//! added or removed as they change, and no port is taken that a process of
//! the pod might want.

use std::io::Write as _;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{LinuxError, io_error};

/// Where Debian's nftables package puts `nft`.
const NFT: &[&str] = &["/usr/sbin/nft", "/sbin/nft"];

/// The first of `paths` that is there: where a Debian package put a tool.
fn installed(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Runs `work` on a short-lived thread that moved into the network
/// namespace at `netns` first (a thread's namespace is its own, and
/// tokio's workers must stay in the host's): the sockets it makes, and the
/// processes it starts, are that namespace's.
pub fn in_network<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let namespace = std::fs::File::open(netns)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", netns.display())))?;
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            rustix::thread::move_into_link_name_space(
                namespace.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            work()
        })?
        .join()
        .map_err(|_| std::io::Error::other("the thread in the pod's network panicked"))?
}

/// Redirects TCP connections made in the network namespace at `netns` to
/// any address of `network` (a CIDR) to its `127.0.0.1:port`.
pub fn redirect_services(netns: &Path, network: &str, port: u16) -> Result<(), LinuxError> {
    // Made afresh, in one transaction: a daemon adopting the pod finds its
    // predecessor's table there, redirecting to a listener that is gone.
    let rules = format!(
        "table ip berth\ndelete table ip berth\n\
         table ip berth {{\n  chain services {{\n    type nat hook output priority -100;\n    \
         ip daddr {network} meta l4proto tcp redirect to :{port}\n  }}\n}}\n"
    );
    nft_in(
        netns,
        &rules,
        "Linux pods cannot reach Services by their addresses",
        "redirect the pod's connections to Services",
    )
}

/// Where a pod whose NetworkPolicies limit its egress may connect outside:
/// addresses of `network` but those of `except`, on these ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// `ADDRESS/BITS`, IPv4 or IPv6.
    pub network: String,
    pub except: Vec<String>,
    pub ports: Vec<PortRange>,
}

/// Ports `first` to `last` of a transport protocol (`tcp`, `udp`, `sctp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange {
    pub protocol: &'static str,
    pub first: u16,
    pub last: u16,
}

/// Limits the connections the network namespace at `netns` makes outside
/// to those `allowed` names (none given: no limit). What stays open is the
/// pod's own loopback, where Services are reached (berth's router checks
/// those), replies to connections made to the pod, and its resolver
/// (`resolver`, when `resolve` is set). Everything else is refused at once
/// (a TCP reset, or ICMP unreachable), not left to time out.
pub fn limit_egress(
    netns: &Path,
    allowed: Option<&[EgressRule]>,
    resolver: std::net::IpAddr,
    resolve: bool,
) -> Result<(), LinuxError> {
    let mut rules = String::from("table inet berth_egress\ndelete table inet berth_egress\n");
    if let Some(allowed) = allowed {
        rules.push_str(&egress_table(allowed, resolver, resolve));
    }
    nft_in(
        netns,
        &rules,
        "NetworkPolicies cannot limit a Linux pod's egress",
        "limit the pod's egress to what its NetworkPolicies allow",
    )
}

/// The nftables table [`limit_egress`] loads.
fn egress_table(allowed: &[EgressRule], resolver: std::net::IpAddr, resolve: bool) -> String {
    let family = |network: &str| if network.contains(':') { "ip6" } else { "ip" };
    let mut chain = String::from(
        "    type filter hook output priority 0; policy accept;\n    \
         ct state established,related accept\n    \
         ip daddr 127.0.0.0/8 accept\n    ip6 daddr ::1 accept\n",
    );
    if resolve {
        let at = family(&resolver.to_string());
        for protocol in ["udp", "tcp"] {
            chain.push_str(&format!(
                "    {at} daddr {resolver} {protocol} dport 53 accept\n"
            ));
        }
    }
    for rule in allowed {
        let at = family(&rule.network);
        let mut matched = format!("{at} daddr {}", rule.network);
        let except: Vec<&String> = rule.except.iter().filter(|e| family(e) == at).collect();
        if !except.is_empty() {
            let listed: Vec<&str> = except.iter().map(|e| e.as_str()).collect();
            matched.push_str(&format!(" {at} daddr != {{ {} }}", listed.join(", ")));
        }
        for range in &rule.ports {
            let ports = if range.first == range.last {
                range.first.to_string()
            } else {
                format!("{}-{}", range.first, range.last)
            };
            chain.push_str(&format!(
                "    {matched} {} dport {ports} accept\n",
                range.protocol
            ));
        }
    }
    chain.push_str("    meta l4proto tcp reject with tcp reset\n    reject\n");
    format!("table inet berth_egress {{\n  chain out {{\n{chain}  }}\n}}\n")
}

/// Loads `rules` with nft in the network namespace at `netns`; `without`
/// says what goes missing when nft is not installed, `task` what failed.
fn nft_in(
    netns: &Path,
    rules: &str,
    without: &'static str,
    task: &'static str,
) -> Result<(), LinuxError> {
    let nft = installed(NFT).ok_or(LinuxError::NotInstalled {
        program: "nft",
        package: "nftables",
        without,
    })?;
    // A child is born in its parent thread's namespaces.
    let child = in_network(netns, move || {
        Command::new(nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    })
    .map_err(io_error("running nft in the pod's network"));
    let mut child = child?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(io_error("writing nft's rules"))?;
    let out = child.wait_with_output().map_err(io_error("running nft"))?;
    if !out.status.success() {
        return Err(LinuxError::Helper {
            program: "nft",
            task,
            status: out.status.to_string(),
            said: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The address a redirected connection was made to.
pub fn original_destination(stream: &impl AsFd) -> std::io::Result<SocketAddrV4> {
    Ok(rustix::net::sockopt::ip_original_dst(stream)?)
}

/// Where pasta finds the pod's network and user namespaces.
const NETNS_FD: i32 = 3;
const USERNS_FD: i32 = 4;

/// How long pasta may take to configure a pod's namespace.
const PASTA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a pod's DNS queries go: pasta answers them there, forwarding each
/// to the host's name server. A link-local address, as Podman gives pasta:
/// no network a pod reaches has it.
pub const DNS_FORWARDER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 1, 1);

/// Where Debian's passt package puts `pasta`.
const PASTA: &[&str] = &["/usr/bin/pasta", "/bin/pasta"];

/// Gives the network namespace at `netns` a way out: Debian's pasta (of
/// passt) attaches to it with an interface and the host's addresses and
/// routes copied in, and carries its connections out as the host's own
/// sockets, so what the host reaches the pod reaches, through the host's
/// own NAT and firewall. It touches nothing of the host's network (no
/// bridge, no forwarding, no firewall rules), so berths side by side, and
/// the host's own firewall, never meet; the cost is user-mode forwarding.
/// Nothing is forwarded into the pod: berth reaches it through its
/// namespace. Returns once the namespace is configured, pasta running on
/// until [`Outside::close`]. Like the pod's containers, it outlives berth:
/// a berth handing over or killed leaves it carrying the pod's connections,
/// and the next one, adopting the pod, finds it by `pid_file` and keeps it
/// (a pasta that `pid_file` names for another namespace is ended).
///
/// DNS queries the pod sends to [`DNS_FORWARDER`] go to the first name
/// server of the host's `/etc/resolv.conf`, or of `resolv_conf` instead.
pub async fn connect_outside(
    netns: &Path,
    pid_file: &Path,
    resolv_conf: Option<&Path>,
) -> Result<Outside, LinuxError> {
    if serving(pid_file, netns) {
        return Ok(Outside {
            pasta: Pasta::Adopted,
            pid_file: pid_file.to_owned(),
        });
    }
    close_outside(pid_file);
    let pasta = installed(PASTA).ok_or(LinuxError::NotInstalled {
        program: "pasta",
        package: "passt",
        without: "Linux pods have no way out",
    })?;
    // The namespaces as descriptors opened here: pasta opens what it is
    // given after dropping its privileges, when a container's pid 1 (not
    // dumpable) no longer lets it open their /proc paths.
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map(std::os::fd::OwnedFd::from)
            .map_err(io_error(path.display()))
    };
    let mut mappings = vec![command_fds::FdMapping {
        parent_fd: open(netns)?,
        child_fd: NETNS_FD,
    }];
    let mut command = Command::new(pasta);
    command
        .args(["--foreground", "--config-net", "--quiet", "--no-map-gw"])
        // As root it would otherwise drop to nobody, who may not enter
        // the pod's namespace.
        .args(["--runas", "0:0"])
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .arg("--dns-forward")
        .arg(DNS_FORWARDER.to_string())
        .arg("--pid")
        .arg(pid_file)
        .arg("--netns")
        .arg(format!("/proc/self/fd/{NETNS_FD}"));
    // A namespace owned by the container's user namespace is configured
    // from inside that one: pasta's own sandbox has no say over it.
    let userns = netns.with_file_name("user");
    let identity = |path: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok()
    };
    if identity(&userns).is_some() && identity(&userns) != identity(Path::new("/proc/self/ns/user"))
    {
        mappings.push(command_fds::FdMapping {
            parent_fd: open(&userns)?,
            child_fd: USERNS_FD,
        });
        command
            .arg("--userns")
            .arg(format!("/proc/self/fd/{USERNS_FD}"));
    }
    if let Some(file) = resolv_conf {
        // pasta forwards to the first name server of /etc/resolv.conf (its
        // `--dns` names servers for DHCP, not the forwarder's), so it is
        // given `file` there, in a mount namespace of its own. Checked
        // here: a failed bind would fail pasta's start as if it were not
        // installed.
        for (path, what) in [
            (file, "--resolv-conf"),
            (Path::new("/etc/resolv.conf"), "the host's"),
        ] {
            if !path.is_file() {
                return Err(LinuxError::Setup(format!(
                    "{} ({what} resolver settings) is not a file to give pasta as its \
                     /etc/resolv.conf",
                    path.display()
                )));
            }
        }
        let file = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
            .map_err(|_| LinuxError::Setup(format!("{} is not a path", file.display())))?;
        resolve_with(&mut command, file);
    }
    use command_fds::CommandFdExt as _;
    command
        .fd_mappings(mappings)
        .map_err(|e| LinuxError::Setup(format!("passing pasta the namespaces: {e}")))?;
    let log_path = pid_file.with_file_name("pasta.log");
    let log = std::fs::File::create(&log_path).map_err(io_error(log_path.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = command.spawn().map_err(io_error("running pasta"))?;
    // It writes its pid file once the namespace is configured.
    let deadline = tokio::time::Instant::now() + PASTA_TIMEOUT;
    loop {
        if std::fs::metadata(pid_file).is_ok_and(|m| m.len() > 0) {
            return Ok(Outside {
                pasta: Pasta::Child(child),
                pid_file: pid_file.to_owned(),
            });
        }
        let failed = |why: String| {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let said: Vec<&str> = said
                .lines()
                .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                .collect();
            LinuxError::Helper {
                program: "pasta",
                task: "connect the pod's network",
                status: why,
                said: said.join("; "),
            }
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(status.to_string()));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("not ready within {PASTA_TIMEOUT:?}")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Makes `command` run with `file` as its /etc/resolv.conf, in a mount
/// namespace of its own.
#[expect(unsafe_code, reason = "pre_exec, and unshare's raw flags")]
fn resolve_with(command: &mut Command, file: std::ffi::CString) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: between fork and exec only system calls are made, on strings
    // made before the fork (nothing allocates); the new mount namespace is
    // the child's alone.
    unsafe {
        command.pre_exec(move || {
            use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
            mount_change(
                c"/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )?;
            mount_bind(file.as_c_str(), c"/etc/resolv.conf")?;
            Ok(())
        });
    }
}

/// A pod's running pasta.
pub struct Outside {
    pasta: Pasta,
    pid_file: PathBuf,
}

enum Pasta {
    /// Started by this berth.
    Child(std::process::Child),
    /// Left running by a previous berth for the pod's containers (named
    /// by the pid file).
    Adopted,
}

impl Outside {
    /// Ends it (and reaps it, if this berth started it).
    pub fn close(self) {
        match self.pasta {
            Pasta::Child(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&self.pid_file);
            }
            Pasta::Adopted => close_outside(&self.pid_file),
        }
    }

    /// Leaves it running for the next berth, which adopts it with the
    /// pod's containers (a daemon handing its pods over).
    pub fn leave(self) {
        // Neither killed nor waited for: it runs on, and is reaped by
        // whoever inherits it once this berth is gone.
        drop(self.pasta);
    }
}

/// Whether the pasta `pid_file` names runs and serves the network
/// namespace at `netns` (it holds that namespace open).
fn serving(pid_file: &Path, netns: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let (Some(pid), Ok(netns)) = (pasta_named(pid_file), std::fs::metadata(netns)) else {
        return false;
    };
    let wanted = format!("net:[{}]", netns.ino());
    std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero())).is_ok_and(|fds| {
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|to| to.as_os_str() == wanted.as_str())
        })
    })
}

/// The pid `pid_file` names, if that process is still a pasta (the pid
/// may have been reused).
fn pasta_named(pid_file: &Path) -> Option<rustix::process::Pid> {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)?;
    std::fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_nonzero()))
        .is_ok_and(|comm| comm.trim().starts_with("pasta") || comm.trim().starts_with("passt"))
        .then_some(pid)
}

/// Ends the pasta `pid_file` names, if it still runs (one a previous
/// berth left for a pod no longer running here).
pub fn close_outside(pid_file: &Path) {
    if let Some(pid) = pasta_named(pid_file) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = std::fs::remove_file(pid_file);
}
