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

/// Where Debian's nftables package puts `nft`.
const NFT: &[&str] = &["/usr/sbin/nft", "/sbin/nft"];

fn nft() -> Result<PathBuf, String> {
    NFT.iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            "nft is not installed (Debian package nftables): Linux pods cannot reach \
             Services by their addresses"
                .to_owned()
        })
}

/// Redirects TCP connections made in the network namespace at `netns` to
/// any address of `network` (a CIDR) to its `127.0.0.1:port`.
pub fn redirect_services(netns: &Path, network: &str, port: u16) -> Result<(), String> {
    let namespace = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    let rules = format!(
        "table ip berth {{\n  chain services {{\n    type nat hook output priority -100;\n    \
         ip daddr {network} meta l4proto tcp redirect to :{port}\n  }}\n}}\n"
    );
    let nft = nft()?;
    // A child is born in its parent thread's namespaces: nft is started
    // from a thread that moved into the pod's.
    let child = std::thread::Builder::new()
        .name("berth-netns-nft".into())
        .spawn(move || {
            rustix::thread::move_into_link_name_space(
                namespace.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| format!("entering the pod's network: {e}"))?;
            Command::new(nft)
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("running nft: {e}"))
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the nft thread panicked".to_owned())?;
    let mut child = child?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(|e| format!("writing nft's rules: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft refused the pod's redirect to Services ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The address a redirected connection was made to.
pub fn original_destination(stream: &impl AsFd) -> std::io::Result<SocketAddrV4> {
    Ok(rustix::net::sockopt::ip_original_dst(stream)?)
}
