//! User namespaces: a container's root is root only inside it. Its ids
//! 0–65535 map onto a block of host ids nothing else uses, so a process
//! that escapes the other namespaces is an unprivileged stranger to the
//! host (as Kubernetes' `hostUsers: false` and Docker's userns-remap do).
//!
//! The image's files stay owned by host root on disk: the root's lower
//! layer and the volumes are idmapped mounts, which show them through the
//! container's mapping. Mounting stays with the init, as host root, in a
//! mount namespace the container's user namespace does not own: the
//! container cannot unmount or remount anything it was given.

use std::fs::File;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::Path;

/// Ids per container: the 16-bit range images assume.
pub const IDS: u32 = 65536;
/// The first block: above the ranges `/etc/subuid` files usually hand out
/// and systemd-nspawn's (524288–1879048191).
const FIRST: u32 = 0x7000_0000;
/// Blocks to choose from: as many containers at once (up to 2^31 - 1).
const BLOCKS: u32 = 4096;

/// A container's id mapping, held for as long as this value lives.
pub struct Mapping {
    /// The host id of the container's uid and gid 0.
    pub host_base: u32,
    /// A handle on a user namespace with the mapping.
    pub namespace: OwnedFd,
    /// A network namespace that user namespace owns, when one was asked
    /// for: there the container's root holds its capabilities (NET_RAW for
    /// ping, NET_BIND_SERVICE), as under Docker's userns-remap.
    pub network: Option<OwnedFd>,
    /// Locks the block so no other container takes it (released by the
    /// kernel when the init that holds it dies, however it dies).
    _lock: File,
}

/// Takes a free block of host ids and makes a user namespace mapping the
/// container's ids onto it, and with `network` a network namespace it owns.
pub fn create(lock_dir: &Path, network: bool) -> Result<Mapping, String> {
    std::fs::create_dir_all(lock_dir).map_err(|e| format!("{}: {e}", lock_dir.display()))?;
    let start = fastrand::u32(0..BLOCKS);
    for i in 0..BLOCKS {
        let block = (start + i) % BLOCKS;
        let path = lock_dir.join(block.to_string());
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if lock.try_lock().is_err() {
            continue;
        }
        let host_base = FIRST + block * IDS;
        let (namespace, network) = namespace_with(host_base, network)?;
        return Ok(Mapping {
            host_base,
            namespace,
            network,
            _lock: lock,
        });
    }
    Err(format!("all {BLOCKS} blocks of user ids are in use"))
}

/// A user namespace mapping ids 0–65535 onto `host_base` and up (and with
/// `network`, a network namespace it owns): a child is born in them and
/// waits while this process (root in the host's namespace) writes its maps
/// and keeps handles on them.
fn namespace_with(host_base: u32, network: bool) -> Result<(OwnedFd, Option<OwnedFd>), String> {
    let (done_r, done_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    // The child shares this process's memory (CLONE_VM: no page tables to
    // copy, which is most of a fork's cost here) and runs only `hold` on
    // a stack of its own.
    let mut stack = vec![0u8; 64 << 10];
    // The child gets a copy of the descriptor table, write end included:
    // it closes that first, or its own copy would keep the pipe open.
    let pipe = [done_r.as_raw_fd(), done_w.as_raw_fd()];
    // With CLONE_NEWUSER in the same call, the kernel makes the user
    // namespace first and gives it the network namespace.
    let flags = libc::CLONE_VM
        | libc::CLONE_NEWUSER
        | if network { libc::CLONE_NEWNET } else { 0 }
        | libc::SIGCHLD;
    #[expect(
        unsafe_code,
        reason = "clone with a child function has no safe wrapper"
    )]
    // SAFETY: `hold` touches nothing of this process's memory but its
    // argument and its own stack, which outlives the child (it is waited
    // for below before `stack` is dropped); the stack grows down from its
    // 16-byte-aligned end.
    let child = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(hold, top.cast(), flags, (&raw const pipe).cast_mut().cast())
    };
    if child < 0 {
        return Err(format!(
            "the kernel refused a user namespace{}: {}",
            if network { " (and its network)" } else { "" },
            std::io::Error::last_os_error()
        ));
    }
    let proc_dir = Path::new("/proc").join(child.to_string());
    let map = format!("0 {host_base} {IDS}\n");
    let result = std::fs::write(proc_dir.join("uid_map"), &map)
        .and_then(|()| std::fs::write(proc_dir.join("gid_map"), &map))
        .and_then(|()| File::open(proc_dir.join("ns/user")))
        .and_then(|user| {
            let net = network
                .then(|| File::open(proc_dir.join("ns/net")))
                .transpose()?;
            Ok((OwnedFd::from(user), net.map(OwnedFd::from)))
        })
        .map_err(|e| format!("mapping the user namespace's ids: {e}"));
    drop(done_w);
    // The child runs on `stack` and reads `pipe`: neither may go before it.
    let pid = rustix::process::Pid::from_raw(child).expect("clone returned a pid");
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
    {}
    drop((done_r, stack));
    result
}

/// The namespace holder: waits for the pipe (`[read, write]` at `pipe`)
/// to close, then exits, with raw system calls only (it shares its
/// parent's memory).
extern "C" fn hold(pipe: *mut libc::c_void) -> libc::c_int {
    let mut byte = 0u8;
    #[expect(unsafe_code, reason = "raw close, read and _exit in a CLONE_VM child")]
    // SAFETY: `pipe` points at two descriptors in the parent's frame, which
    // waits for this child before returning; closing and reading touch
    // this child's own descriptor table, `_exit` runs no destructors. (On
    // failure libc would set the parent's errno, shared through TLS; these
    // cannot fail on descriptors just inherited.)
    unsafe {
        let [read, write] = *pipe.cast::<[libc::c_int; 2]>();
        libc::close(write);
        libc::read(read, (&raw mut byte).cast(), 1);
        libc::_exit(0)
    }
}

/// Attributes of `mount_setattr(2)` (not wrapped by rustix).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mount flags for [`detached_tree`].
#[derive(Clone, Copy)]
pub struct Flags {
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
}

/// A detached copy of the mount at `source` (with what is mounted below it
/// when `recursive`) seen through `namespace`'s id mapping, to attach with
/// [`attach`]. Fails where the filesystem cannot be idmapped.
pub fn idmapped_tree(
    source: &Path,
    namespace: BorrowedFd<'_>,
    flags: Flags,
    recursive: bool,
) -> Result<OwnedFd, rustix::io::Errno> {
    detached_tree(source, Some(namespace), flags, recursive)
}

/// A detached copy of the mount at `source`, with `flags` (applied to every
/// mount below it when `recursive`) and, given a user namespace, its id
/// mapping. Attributes are set on the copy before it is attached anywhere,
/// so no path is looked up twice.
pub fn detached_tree(
    source: &Path,
    namespace: Option<BorrowedFd<'_>>,
    flags: Flags,
    recursive: bool,
) -> Result<OwnedFd, rustix::io::Errno> {
    use rustix::mount::OpenTreeFlags;
    let mut open = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        open |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(rustix::fs::CWD, source, open)?;
    let mut attr_set = if namespace.is_some() {
        MOUNT_ATTR_IDMAP
    } else {
        0
    };
    for (on, bit) in [
        (flags.read_only, MOUNT_ATTR_RDONLY),
        (flags.nosuid, MOUNT_ATTR_NOSUID),
        (flags.nodev, MOUNT_ATTR_NODEV),
    ] {
        if on {
            attr_set |= bit;
        }
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: namespace.map_or(0, |ns| ns.as_raw_fd() as u64),
    };
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= libc::AT_RECURSIVE;
    }
    #[expect(unsafe_code, reason = "mount_setattr has no wrapper")]
    // SAFETY: a valid tree descriptor, an empty NUL-terminated path with
    // AT_EMPTY_PATH, and a mount_attr of the size passed.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set != 0 {
        return Err(rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(tree)
}

/// Mounts a tree from [`detached_tree`] at `target`.
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<(), rustix::io::Errno> {
    rustix::mount::move_mount(
        tree.as_fd(),
        c"",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// Mounts a tree from [`detached_tree`] on the file or directory `target`
/// is open on (an `O_PATH` descriptor will do), whatever its path is now.
pub fn attach_at(tree: &OwnedFd, target: BorrowedFd<'_>) -> Result<(), rustix::io::Errno> {
    rustix::mount::move_mount(
        tree.as_fd(),
        c"",
        target,
        c"",
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
            | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// Gives a copied root to the container's ids: each file's owner moves up
/// by `host_base` (used when there is no overlayfs to idmap under).
pub fn shift_ownership(dir: &Path, host_base: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let shift = |path: &Path| -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        std::os::unix::fs::lchown(
            path,
            Some(host_base + meta.uid().min(IDS - 1)),
            Some(host_base + meta.gid().min(IDS - 1)),
        )
    };
    shift(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            shift_ownership(&entry.path(), host_base)?;
        } else {
            shift(&entry.path())?;
        }
    }
    Ok(())
}
