//! Restarts without an outage: a new daemon (a new binary, or the same one
//! on SIGHUP) takes over the listening sockets of the one serving its home,
//! as nginx's binary upgrade and Envoy's hot restart do.
//!
//! The sockets themselves move, over a unix socket in the home
//! (`handover.sock`, SOCK_SEQPACKET so each message keeps its bounds, the
//! descriptors as SCM_RIGHTS), so the kernel keeps queueing connections on
//! them while no daemon accepts: a client meets a short wait, never a
//! refusal. Binding anew with SO_REUSEPORT would not do: connections queued
//! on the old socket when it closes are reset.
//!
//! The exchange, successor to predecessor:
//! 1. `listeners` → one message per socket (its name, the descriptor), then
//!    `end`. The predecessor goes on serving.
//! 2. `release` → the predecessor stops as on SIGTERM (its listeners stop
//!    accepting, its connections end on answers that say so, its pods stop,
//!    its last statuses are written), lets go of the home's lease, and says
//!    `released`. From then on only the successor writes the store.
//!
//! The lease is an exclusive `flock` of `daemon.pid` (which names the
//! holder): the kernel lets go of it when its holder dies, so after a
//! `kill -9` a new daemon takes the home at once.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType,
};

/// Why a daemon could not take its home, or over from its predecessor.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(
        "a berth daemon{} is already serving {home}: stop it, or start this one with --take-over \
         to replace it without dropping a request",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Taken { home: PathBuf, pid: Option<u32> },
    #[error("--take-over: no berth daemon serves {home} (nothing listens on {socket})")]
    NoPredecessor { home: PathBuf, socket: PathBuf },
    #[error("--take-over: the daemon of {home} did not let go of it within {waited:?}")]
    NotReleased { home: PathBuf, waited: Duration },
    #[error("--take-over: {stage}: {source}")]
    Exchange {
        stage: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HandoverError + '_ {
    move |source| HandoverError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exchange(stage: &'static str) -> impl FnOnce(std::io::Error) -> HandoverError {
    move |source| HandoverError::Exchange { stage, source }
}

pub fn socket_path(home: &Path) -> PathBuf {
    home.join("handover.sock")
}

fn lease_path(home: &Path) -> PathBuf {
    home.join("daemon.pid")
}

/// The home's lease: while it is held, this daemon alone runs the
/// controllers and the kubelet and writes the store.
#[derive(Debug)]
pub struct Lease {
    _file: std::fs::File,
}

impl Lease {
    /// Takes the lease of `home`, waiting up to `wait` for its holder to
    /// let go of it.
    pub fn take(home: &Path, wait: Duration) -> Result<Lease, HandoverError> {
        use std::io::{Seek as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = lease_path(home);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let deadline = Instant::now() + wait;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let pid = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|text| text.trim().parse().ok());
                    return Err(HandoverError::Taken {
                        home: home.to_owned(),
                        pid,
                    });
                }
                Err(e) => return Err(io(&path)(e.into())),
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io(&path))?;
        Ok(Lease { _file: file })
    }
}

/// A daemon's listening sockets by name: those a predecessor handed over,
/// until taken, and those it offers a successor.
#[derive(Debug, Default)]
pub struct Sockets {
    inherited: Mutex<HashMap<String, OwnedFd>>,
    offered: Mutex<HashMap<String, OwnedFd>>,
}

impl Sockets {
    pub fn inherited(sockets: HashMap<String, OwnedFd>) -> Sockets {
        Sockets {
            inherited: Mutex::new(sockets),
            offered: Mutex::default(),
        }
    }

    /// The TCP listener named `name` on `address`: the one handed over
    /// under that name if it listens there (any port, when `address` asks
    /// for port 0), else one `bind` makes. It is offered to a successor
    /// under that name until withdrawn.
    pub fn tcp(
        &self,
        name: &str,
        address: SocketAddr,
        bind: impl FnOnce(SocketAddr) -> std::io::Result<std::net::TcpListener>,
    ) -> std::io::Result<std::net::TcpListener> {
        let inherited = self.inherited.lock().remove(name).and_then(|fd| {
            let listener = std::net::TcpListener::from(fd);
            let at = listener.local_addr().ok()?;
            (at.ip() == address.ip() && (address.port() == 0 || at.port() == address.port()))
                .then_some(listener)
        });
        let listener = match inherited {
            Some(listener) => listener,
            None => bind(address)?,
        };
        listener.set_nonblocking(true)?;
        self.offer(name, listener.as_fd())?;
        Ok(listener)
    }

    /// Makes sure a listener named `name` on `address` can be had: the one
    /// handed over if it listens there, else one bound now (kept under that
    /// name for [`Sockets::tcp`]). A successor calls it before it asks its
    /// predecessor to stop: an address it cannot bind (a changed
    /// `--ingress` already in use) then leaves the predecessor serving.
    pub fn prebind(
        &self,
        name: &str,
        address: SocketAddr,
        bind: impl FnOnce(SocketAddr) -> std::io::Result<std::net::TcpListener>,
    ) -> std::io::Result<()> {
        let mut inherited = self.inherited.lock();
        let fits = inherited.get(name).is_some_and(|fd| {
            let at = rustix::net::getsockname(fd)
                .ok()
                .and_then(|a| SocketAddr::try_from(a).ok());
            at.is_some_and(|at| {
                at.ip() == address.ip() && (address.port() == 0 || at.port() == address.port())
            })
        });
        if !fits {
            inherited.insert(name.to_owned(), bind(address)?.into());
        }
        Ok(())
    }

    /// The unix listener named `name`: the one handed over, else one `bind`
    /// makes; offered to a successor.
    pub fn unix(
        &self,
        name: &str,
        bind: impl FnOnce() -> std::io::Result<std::os::unix::net::UnixListener>,
    ) -> std::io::Result<std::os::unix::net::UnixListener> {
        let listener = match self.inherited.lock().remove(name) {
            Some(fd) => std::os::unix::net::UnixListener::from(fd),
            None => bind()?,
        };
        listener.set_nonblocking(true)?;
        self.offer(name, listener.as_fd())?;
        Ok(listener)
    }

    fn offer(&self, name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        self.offered
            .lock()
            .insert(name.to_owned(), fd.try_clone_to_owned()?);
        Ok(())
    }

    /// Offers `name` no more (its listener closed: a successor must not
    /// keep it open, queueing connections no one takes).
    pub fn withdraw(&self, name: &str) {
        self.offered.lock().remove(name);
    }

    /// Offers nothing more: on a shutdown with no successor, so the
    /// sockets close with their listeners and clients are refused, not
    /// kept waiting.
    pub fn withdraw_all(&self) {
        self.offered.lock().clear();
    }

    /// Those handed over that no one took and `which` names (their
    /// listeners are no longer wanted): closed.
    pub fn forget_inherited(&self, which: impl Fn(&str) -> bool) -> Vec<String> {
        let mut forgotten = Vec::new();
        self.inherited.lock().retain(|name, _| {
            let forget = which(name);
            if forget {
                forgotten.push(name.clone());
            }
            !forget
        });
        forgotten
    }
}

/// A listener on `address` with a deep accept queue: across a handover,
/// connections wait there while neither daemon accepts (std's 128 would
/// overflow under load; the kernel caps it at `somaxconn`).
pub fn bind_tcp(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_listener(address, false)
}

/// [`bind_tcp`]'s listener, sharing its port with others that also ask
/// (SO_REUSEPORT) when `shared`. Non-blocking.
pub fn bind_listener(address: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(shared)?;
    socket.bind(address)?;
    socket.listen(4096)?.into_std()
}

/// Messages are short; a name is an address or a word.
const MESSAGE: usize = 256;

fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

fn send(socket: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// One message and the descriptor it carries, if any; empty at the end of
/// the peer.
fn receive(socket: BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut bytes = [0u8; MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    // CLOEXEC: the sockets must not leak into the containers berth starts.
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for received in fds {
                fd.get_or_insert(received);
            }
        }
    }
    Ok((bytes[..got.bytes].to_vec(), fd))
}

/// A successor's side: connected to the daemon serving `home`.
pub struct Successor {
    socket: OwnedFd,
    home: PathBuf,
}

impl Successor {
    /// Connects to the daemon serving `home` and takes its listening
    /// sockets, by name. It goes on serving until [`Successor::release`].
    pub fn connect(home: &Path) -> Result<(Successor, HashMap<String, OwnedFd>), HandoverError> {
        let path = socket_path(home);
        let socket = seqpacket().map_err(exchange("making a socket"))?;
        let address = SocketAddrUnix::new(&path).map_err(|e| io(&path)(e.into()))?;
        if let Err(e) = rustix::net::connect(&socket, &address) {
            return Err(match e {
                rustix::io::Errno::NOENT | rustix::io::Errno::CONNREFUSED => {
                    HandoverError::NoPredecessor {
                        home: home.to_owned(),
                        socket: path,
                    }
                }
                e => io(&path)(e.into()),
            });
        }
        send(socket.as_fd(), b"listeners", None).map_err(exchange("asking for the sockets"))?;
        let mut sockets = HashMap::new();
        loop {
            let (name, fd) = receive(socket.as_fd()).map_err(exchange("receiving the sockets"))?;
            match fd {
                Some(fd) => {
                    sockets.insert(String::from_utf8_lossy(&name).into_owned(), fd);
                }
                None if name == b"end" => break,
                None => {
                    return Err(HandoverError::Exchange {
                        stage: "receiving the sockets",
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the daemon ended the exchange",
                        ),
                    });
                }
            }
        }
        Ok((
            Successor {
                socket,
                home: home.to_owned(),
            },
            sockets,
        ))
    }

    /// Asks the predecessor to stop and waits until it has let go of the
    /// home (or died), at most `wait`.
    pub fn release(self, wait: Duration) -> Result<(), HandoverError> {
        // A predecessor that died has let go too (its socket then says
        // EPIPE, or ECONNRESET, or ends): the lease tells.
        let gone = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        };
        match send(self.socket.as_fd(), b"release", None) {
            Err(e) if gone(&e) => return Ok(()),
            sent => sent.map_err(exchange("asking it to stop"))?,
        }
        rustix::net::sockopt::set_socket_timeout(
            &self.socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(wait),
        )
        .map_err(|e| exchange("waiting for it")(e.into()))?;
        match receive(self.socket.as_fd()) {
            Ok((answer, _)) if answer == b"refused" => Err(HandoverError::Exchange {
                stage: "asking it to stop",
                source: std::io::Error::other(
                    "it is shutting down by itself; start this one after",
                ),
            }),
            // `released`, or the end.
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                Err(HandoverError::NotReleased {
                    home: self.home,
                    waited: wait,
                })
            }
            Err(e) => Err(exchange("waiting for it")(e)),
        }
    }
}

/// A predecessor's side: offers its sockets to a successor until one asks
/// it to stop.
pub struct Offer {
    path: PathBuf,
    /// Told when the daemon has stopped, for the successor to hear.
    stopped: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    state: Arc<Mutex<OfferState>>,
}

/// Where a daemon's offer stands: a successor may ask it to stop until it
/// stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferState {
    Open,
    Asked,
    Closed,
}

impl Offer {
    /// Listens on `home`'s handover socket (its lease held: any socket
    /// file there is a dead daemon's). A successor's `release` calls
    /// `stop`; `sockets` are what it is given.
    pub fn listen(
        home: &Path,
        sockets: Arc<Sockets>,
        stop: impl Fn() + Send + 'static,
    ) -> Result<Offer, HandoverError> {
        let path = socket_path(home);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
            _ => {}
        }
        let listener = seqpacket().map_err(io(&path))?;
        let address = SocketAddrUnix::new(&path).map_err(|e| io(&path)(e.into()))?;
        // As the API's socket: no moment when another user could connect.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = rustix::net::bind(&listener, &address);
        rustix::process::umask(old);
        bound
            .and_then(|()| rustix::net::listen(&listener, 4))
            .map_err(|e| io(&path)(e.into()))?;
        let (stopped, on_stopped) = std::sync::mpsc::channel();
        let state = Arc::new(Mutex::new(OfferState::Open));
        let state_too = state.clone();
        let thread = std::thread::Builder::new()
            .name("handover".into())
            .spawn(move || {
                let me = rustix::process::getuid();
                loop {
                    // Close-on-exec: a container the daemon starts meanwhile
                    // must not hold the successor's line open.
                    let peer = match rustix::net::accept_with(
                        &listener,
                        rustix::net::SocketFlags::CLOEXEC,
                    ) {
                        Ok(peer) => peer,
                        Err(_) => {
                            // Out of descriptors, say: not a spin.
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    // Only its own user may take a daemon's sockets.
                    if !rustix::net::sockopt::socket_peercred(&peer).is_ok_and(|c| c.uid == me) {
                        continue;
                    }
                    if serve_successor(&peer, &sockets).is_err() {
                        continue;
                    }
                    {
                        let mut state = state_too.lock();
                        if *state == OfferState::Closed {
                            let _ = send(peer.as_fd(), b"refused", None);
                            return;
                        }
                        *state = OfferState::Asked;
                    }
                    // Asked to stop: from here on, stopping is the daemon's.
                    stop();
                    let _ = on_stopped.recv();
                    let _ = send(peer.as_fd(), b"released", None);
                    return;
                }
            })
            .map_err(io(&path))?;
        Ok(Offer {
            path,
            stopped,
            thread,
            state,
        })
    }

    /// Whether a successor asked this daemon to stop; if none has, none
    /// may from now on (the daemon stops by itself, and tells a successor
    /// that comes too late so).
    pub fn close(&self) -> bool {
        let mut state = self.state.lock();
        if *state == OfferState::Open {
            *state = OfferState::Closed;
        }
        *state == OfferState::Asked
    }

    fn asked(&self) -> bool {
        *self.state.lock() == OfferState::Asked
    }

    /// The daemon has stopped (and let go of its lease): tells the
    /// successor, if one asked. Without one, its socket goes.
    pub fn stopped(self) {
        if self.asked() {
            let _ = self.stopped.send(());
            let _ = self.thread.join();
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Gives the successor connected on `peer` the sockets; `Ok` once it asks
/// this daemon to stop.
fn serve_successor(peer: &OwnedFd, sockets: &Sockets) -> std::io::Result<()> {
    loop {
        let (message, _) = receive(peer.as_fd())?;
        match message.as_slice() {
            b"listeners" => {
                let offered = sockets.offered.lock();
                for (name, fd) in offered.iter() {
                    send(peer.as_fd(), name.as_bytes(), Some(fd.as_fd()))?;
                }
                send(peer.as_fd(), b"end", None)?;
            }
            b"release" => return Ok(()),
            // Gone before asking: this daemon serves on.
            b"" => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the successor left",
                ));
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a handover message",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_takes_the_sockets_and_the_lease_once_released() {
        let home = tempfile::tempdir().unwrap();
        let lease = Lease::take(home.path(), Duration::ZERO).unwrap();
        // A second daemon without --take-over is refused, naming the first.
        let refused = Lease::take(home.path(), Duration::ZERO).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{refused}"
        );
        let sockets = Arc::new(Sockets::default());
        let listener = sockets
            .tcp("ingress", "127.0.0.1:0".parse().unwrap(), |a| {
                std::net::TcpListener::bind(a)
            })
            .unwrap();
        let address = listener.local_addr().unwrap();
        let closed = sockets
            .tcp("gone", "127.0.0.1:0".parse().unwrap(), |a| {
                std::net::TcpListener::bind(a)
            })
            .unwrap();
        sockets.withdraw("gone");
        drop(closed);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let offer = Offer::listen(home.path(), sockets, move || {
            let _ = stop_tx.send(());
        })
        .unwrap();

        let (successor, taken) = Successor::connect(home.path()).unwrap();
        assert_eq!(taken.keys().collect::<Vec<_>>(), ["ingress"]);
        let theirs = Sockets::inherited(taken);
        // Asked for another address, a successor binds its own.
        let other = theirs
            .tcp("ingress", "127.0.0.2:0".parse().unwrap(), |a| {
                std::net::TcpListener::bind(a)
            })
            .unwrap();
        assert_ne!(other.local_addr().unwrap(), address);
        // One that leaves without asking changes nothing.
        drop(successor);
        let (successor_2, taken) = Successor::connect(home.path()).unwrap();
        let theirs = Sockets::inherited(taken);
        let same = theirs
            .tcp("ingress", "127.0.0.1:0".parse().unwrap(), |_| {
                panic!("bound anew though one was handed over")
            })
            .unwrap();
        assert_eq!(same.local_addr().unwrap(), address);
        // A connection queued while neither accepts reaches the successor.
        drop(listener);
        let mut client = std::net::TcpStream::connect(address).unwrap();
        let releasing = std::thread::spawn(move || successor_2.release(Duration::from_secs(10)));
        stop_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(offer.close());
        drop(lease);
        offer.stopped();
        releasing.join().unwrap().unwrap();
        Lease::take(home.path(), Duration::ZERO).unwrap();
        same.set_nonblocking(false).unwrap();
        let (mut accepted, _) = same.accept().unwrap();
        use std::io::{Read as _, Write as _};
        client.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn a_daemon_stopping_by_itself_refuses_a_late_successor() {
        let home = tempfile::tempdir().unwrap();
        let _lease = Lease::take(home.path(), Duration::ZERO).unwrap();
        let offer = Offer::listen(home.path(), Arc::new(Sockets::default()), || {
            panic!("a successor stopped a daemon that was stopping by itself")
        })
        .unwrap();
        // SIGTERM: the daemon closes its offer as it begins to stop.
        assert!(!offer.close());
        let (successor, _) = Successor::connect(home.path()).unwrap();
        let refused = successor.release(Duration::from_secs(10)).unwrap_err();
        assert!(refused.to_string().contains("shutting down"), "{refused}");
    }

    #[test]
    fn a_successor_binds_what_it_did_not_inherit_before_it_asks() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let inherited = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = inherited.local_addr().unwrap();
        let sockets = Sockets::inherited(HashMap::from([(
            "ingress".to_owned(),
            OwnedFd::from(inherited),
        )]));
        let bind = |a| std::net::TcpListener::bind(a);
        // The inherited one fits: kept.
        sockets.prebind("ingress", at, bind).unwrap();
        // An address someone holds: refused now, before any handover.
        assert!(sockets.prebind("api", busy, bind).is_err());
        // A new one: bound now, taken later.
        sockets
            .prebind("metrics", "127.0.0.1:0".parse().unwrap(), bind)
            .unwrap();
        let metrics = sockets
            .tcp("metrics", "127.0.0.1:0".parse().unwrap(), |_| {
                panic!("bound again though bound before")
            })
            .unwrap();
        assert_ne!(metrics.local_addr().unwrap(), at);
        let ingress = sockets
            .tcp("ingress", at, |_| panic!("bound again though inherited"))
            .unwrap();
        assert_eq!(ingress.local_addr().unwrap(), at);
    }
}
