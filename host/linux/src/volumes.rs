//! A pod's volumes, bound into a container's root by its init.
//!
//! A mount point is a path inside the root, and the root is not only the
//! image's: a volume shared by the pod's containers is writable by all of
//! them, so a running sibling can turn a directory on another volume's path
//! into a symlink at any moment (runc's CVE-2021-30465). Checking the path
//! and then mounting by it would race that. So each level is opened
//! relative to the one before it without following symlinks, and the
//! volume is attached to the final descriptor: the mount lands on the inode
//! that was checked, whatever its path has become since.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags, StatVfsMountFlags};
use rustix::io::Errno;
use rustix::mount::MountFlags;

use super::config::BindMount;
use super::userns;

/// The volumes as the container's ids see them, ready to attach.
pub struct Idmapped<'a> {
    /// One tree per mount, in order.
    pub trees: &'a [OwnedFd],
    /// The host id of the container's root.
    pub host_base: u32,
}

/// Binds `mounts` into the root at `rootfs`, read-only unless granted
/// writable, never setuid or device files: the trees of `idmapped` when
/// the container has a user namespace, otherwise each as the host sees it.
pub fn mount(
    rootfs: &Path,
    mounts: &[BindMount],
    idmapped: Option<Idmapped<'_>>,
) -> Result<(), String> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening the root {}: {e}", rootfs.display()))?;
    let maker = idmapped.as_ref().map(|m| m.host_base);
    for (i, mount) in mounts.iter().enumerate() {
        let failed = |e: String| format!("volume mount path {}: {e}", mount.target);
        let relative = Path::new(mount.target.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "volume mount path {:?} must be absolute, without ..",
                mount.target
            ));
        }
        let point =
            mount_point(root.as_fd(), relative, mount.source.is_dir(), maker).map_err(failed)?;
        let flags = userns::Flags {
            read_only: !mount.writable,
            nosuid: true,
            nodev: true,
        };
        let attached = match &idmapped {
            Some(m) => userns::attach_at(&m.trees[i], point.as_fd()),
            None if classic_only() => Err(Errno::NOSYS),
            None => userns::detached_tree(&mount.source, None, flags, true)
                .and_then(|tree| userns::attach_at(&tree, point.as_fd())),
        };
        match attached {
            Ok(()) => {}
            // Before Linux 5.12 (no mount_setattr), with host ids.
            Err(Errno::NOSYS) if idmapped.is_none() => {
                bind_classic(root.as_fd(), relative, mount, &point, flags).map_err(failed)?;
            }
            Err(e) => {
                return Err(failed(format!("mounting {}: {e}", mount.source.display())));
            }
        }
    }
    Ok(())
}

/// The mount point at `relative` under `root`, as an `O_PATH` descriptor:
/// every level a real directory (the last a regular file when the volume is
/// one), made where missing. A symlink anywhere is refused, not followed.
///
/// Inside a volume idmapped for a user namespace, host root is nobody and
/// cannot make anything (EOVERFLOW); there a level is made as `container_root`
/// (its host id), which leaves it owned by root on disk, as what the
/// container's root writes there is.
fn mount_point(
    root: BorrowedFd<'_>,
    relative: &Path,
    directory: bool,
    container_root: Option<u32>,
) -> Result<OwnedFd, String> {
    let parts: Vec<&std::ffi::OsStr> = relative.iter().collect();
    let mut at: Option<OwnedFd> = None;
    for (depth, part) in parts.iter().enumerate() {
        let dir = at.as_ref().map_or(root, |fd| fd.as_fd());
        let last = depth + 1 == parts.len();
        let want_dir = !last || directory;
        let shown = || {
            parts[..=depth]
                .iter()
                .fold(std::path::PathBuf::from("/"), |p, c| p.join(c))
                .display()
                .to_string()
        };
        let fd = match open_level(dir, part) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let make = || make_level(dir, part, want_dir);
                let made = match (make(), container_root) {
                    (Err(Errno::OVERFLOW), Some(id)) => as_fs_user(id, make),
                    (made, _) => made,
                };
                // Made by someone else meanwhile: checked like any other.
                match made {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(format!("making {}: {e}", shown())),
                }
                open_level(dir, part).map_err(|e| format!("{}: {e}", shown()))?
            }
            Err(e) => return Err(format!("{}: {e}", shown())),
        };
        let kind = rustix::fs::fstat(&fd)
            .map(|stat| FileType::from_raw_mode(stat.st_mode))
            .map_err(|e| format!("{}: {e}", shown()))?;
        match kind {
            FileType::Symlink => return Err(format!("{} is a symlink", shown())),
            FileType::Directory if want_dir => {}
            FileType::RegularFile if !want_dir => {}
            _ if want_dir => return Err(format!("{} is not a directory", shown())),
            _ => return Err(format!("{} is not a regular file", shown())),
        }
        at = Some(fd);
    }
    at.ok_or_else(|| "the root itself cannot be a volume's mount point".to_owned())
}

fn make_level(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, directory: bool) -> Result<(), Errno> {
    if directory {
        return rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755));
    }
    rustix::fs::openat(
        dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map(drop)
}

/// Runs `f` with file-system ids `id`:`id`, then back as root. The init is
/// single-threaded, so nothing else runs meanwhile under those ids.
fn as_fs_user<T>(id: u32, f: impl FnOnce() -> T) -> T {
    #[expect(unsafe_code, reason = "setfsuid/setfsgid have no safe wrapper")]
    // SAFETY: plain system calls on integers; they only change this
    // thread's file-system ids, which are restored below.
    unsafe {
        libc::setfsgid(id);
        libc::setfsuid(id);
    }
    let result = f();
    #[expect(unsafe_code, reason = "setfsuid/setfsgid have no safe wrapper")]
    // SAFETY: as above; back to root, which the init runs as.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    result
}

/// Binds `mount` where the kernel has no `open_tree`/`mount_setattr`:
/// through the checked descriptor's `/proc/self/fd` link, which names that
/// inode however its path has changed. Flags need a remount of the new
/// mount, found by walking the path again (the walk crosses into it) and
/// refused unless what it finds is the volume itself, as runc does it.
///
/// Not recursive: a remount reaches one mount only, so a mount below the
/// source would escape the flags (a writable, setuid-capable disk inside a
/// read-only volume); on these kernels it is not seen at all. The remount
/// replaces every flag, so those the source has (read-only, noexec…) are
/// passed again: a volume never gets more than its source allows.
fn bind_classic(
    root: BorrowedFd<'_>,
    relative: &Path,
    mount: &BindMount,
    point: &OwnedFd,
    flags: userns::Flags,
) -> Result<(), String> {
    let through = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::mount::mount_bind(&mount.source, through(point))
        .map_err(|e| format!("mounting {}: {e}", mount.source.display()))?;
    let bound = mount_point(root, relative, mount.source.is_dir(), None)?;
    let identity = |stat: rustix::fs::Stat| (stat.st_dev, stat.st_ino);
    let source = rustix::fs::stat(&mount.source).map(identity);
    if rustix::fs::fstat(&bound).map(identity) != source || source.is_err() {
        return Err(format!(
            "{} changed while {} was mounted on it",
            mount.target,
            mount.source.display()
        ));
    }
    let kept = rustix::fs::fstatvfs(&bound)
        .map_err(|e| format!("reading the flags of {}: {e}", mount.source.display()))?
        .f_flag;
    // ST_NOSYMFOLLOW, which rustix does not name.
    let no_symlinks = StatVfsMountFlags::from_bits_retain(0x2000);
    let mut remount = MountFlags::BIND;
    for (on, flag) in [
        (flags.read_only, MountFlags::RDONLY),
        (flags.nosuid, MountFlags::NOSUID),
        (flags.nodev, MountFlags::NODEV),
        (kept.contains(StatVfsMountFlags::RDONLY), MountFlags::RDONLY),
        (kept.contains(StatVfsMountFlags::NOSUID), MountFlags::NOSUID),
        (kept.contains(StatVfsMountFlags::NODEV), MountFlags::NODEV),
        (kept.contains(StatVfsMountFlags::NOEXEC), MountFlags::NOEXEC),
        (
            kept.contains(StatVfsMountFlags::NOATIME),
            MountFlags::NOATIME,
        ),
        (
            kept.contains(StatVfsMountFlags::NODIRATIME),
            MountFlags::NODIRATIME,
        ),
        (
            kept.contains(StatVfsMountFlags::RELATIME),
            MountFlags::RELATIME,
        ),
        // Passing any atime flag drops the others, and none at all means
        // relatime: strictatime must be said.
        (
            !kept.intersects(StatVfsMountFlags::NOATIME | StatVfsMountFlags::RELATIME),
            MountFlags::STRICTATIME,
        ),
        (kept.contains(no_symlinks), MountFlags::NOSYMFOLLOW),
    ] {
        if on {
            remount |= flag;
        }
    }
    rustix::mount::mount_remount(through(&bound), remount, "")
        .map_err(|e| format!("setting the flags of {}: {e}", mount.source.display()))
}

/// Set (to anything) in berth's environment, containers bind host-id
/// volumes as kernels before 5.12 make them: the test suite's way to run
/// that path on a newer one.
pub const CLASSIC_MOUNTS: &str = "BERTH_TEST_CLASSIC_MOUNTS";

fn classic_only() -> bool {
    std::env::var_os(CLASSIC_MOUNTS).is_some()
}

/// `name` in `dir`, opened as itself: a symlink is not followed but opened
/// (and then refused by the caller).
fn open_level(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Makes the directory `dir` (a pod's emptyDir) a tmpfs of at most
/// `size` bytes (the kernel's default, half the memory, when None),
/// writable by every user as an emptyDir is. Already one: left as it is
/// (a pod's next run keeps its data, as a pod's restarted containers do).
pub fn memory_backed(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir)? {
        return Ok(());
    }
    let mut options = String::from("mode=0777");
    if let Some(size) = size {
        options.push_str(&format!(",size={size}"));
    }
    let options = std::ffi::CString::new(options).map_err(std::io::Error::other)?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(options.as_c_str()),
    )?;
    Ok(())
}

/// Whether something is mounted on `dir`: it is on a device other than
/// its parent's.
pub fn is_mount_point(dir: &Path) -> std::io::Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    Ok(rustix::fs::stat(dir)?.st_dev != rustix::fs::stat(parent)?.st_dev)
}

/// Unmounts whatever is mounted on the entries of `dir` (a pod's
/// volumes), so the directory can go.
pub fn unmount_all_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Not a mount point (EINVAL) is the common case.
        let _ = rustix::mount::unmount(entry.path(), rustix::mount::UnmountFlags::DETACH);
    }
}
