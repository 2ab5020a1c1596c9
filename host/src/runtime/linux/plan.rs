//! The container's filesystem and privileges as data: the mounts to make,
//! the paths to hide, the capabilities to keep. Decided here, carried out
//! by `init.rs`, so what a container gets can be read and tested without
//! making one.

use rustix::thread::CapabilitySet;

/// What a process in a container keeps: Docker's default set but MKNOD.
/// Docker can leave MKNOD because its devices cgroup makes a new node
/// useless; without one here, a block device node would open the host's
/// disk, so no node can be made at all.
pub fn default_capabilities() -> CapabilitySet {
    CapabilitySet::CHOWN
        | CapabilitySet::DAC_OVERRIDE
        | CapabilitySet::FSETID
        | CapabilitySet::FOWNER
        | CapabilitySet::NET_RAW
        | CapabilitySet::SETGID
        | CapabilitySet::SETUID
        | CapabilitySet::SETFCAP
        | CapabilitySet::SETPCAP
        | CapabilitySet::NET_BIND_SERVICE
        | CapabilitySet::SYS_CHROOT
        | CapabilitySet::KILL
        | CapabilitySet::AUDIT_WRITE
}

/// System calls a container may not make (they fail with EPERM): Docker's
/// default profile's refusals — kernel modules and keyrings, clocks, swap,
/// reboot, namespaces and mounts (old and new API), BPF and perf, io_uring,
/// NUMA policy, handle-based opens. `clone` with namespace flags and
/// `clone3` are handled beside it (see `init.rs`).
pub const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    libc::SYS_umount2,
    libc::SYS_unshare,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    // The new mount API, as mount and umount2 are refused.
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // io_uring, a door around the filter (Docker refuses it too).
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
];

/// Paths of /proc and /sys that leak the host or let a container poke the
/// kernel, hidden as Docker hides them: files under /dev/null, directories
/// under an empty read-only tmpfs.
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths of /proc that stay visible but read-only.
pub const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The device nodes of a container's /dev: (name, major, minor).
pub const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The environment a container starts with: the image's, then the pod's
/// over it (a later `K=` replaces an earlier one), with `PATH` defaulted
/// and `HOSTNAME` set, as Docker does.
pub fn environment(image: &[String], pod: &[(String, String)], hostname: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    set("HOSTNAME", hostname);
    for item in image {
        if let Some((k, v)) = item.split_once('=') {
            set(k, v);
        }
    }
    for (k, v) in pod {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The command line: Kubernetes' `command` replaces the image's
/// Entrypoint, `args` its Cmd; `args` alone keeps the Entrypoint.
pub fn command_line(
    entrypoint: &[String],
    cmd: &[String],
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Vec<String> {
    match (command, args) {
        (Some(command), Some(args)) => command.iter().chain(args).cloned().collect(),
        (Some(command), None) => command.to_vec(),
        (None, Some(args)) => entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// `user` (`uid`, `uid:gid`, `name` or `name:group`) as numbers, names
/// looked up in the image's /etc/passwd and /etc/group text.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |text: &str, name: &str| -> Option<Vec<String>> {
        text.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(name))
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let fields = entry(passwd, u)
                .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?;
            let uid = fields.get(2).and_then(|f| f.parse().ok());
            let gid = fields.get(3).and_then(|f| f.parse().ok());
            (
                uid.ok_or_else(|| format!("user {u:?}: bad /etc/passwd entry"))?,
                gid,
            )
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(group, g)
                .and_then(|f| f.get(2).and_then(|f| f.parse().ok()))
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_env_overrides_the_image_s_and_path_has_a_default() {
        let env = environment(
            &["PATH=/bin".into(), "A=image".into(), "B=image".into()],
            &[("B".into(), "pod".into())],
            "web-1",
        );
        assert_eq!(env, ["PATH=/bin", "HOSTNAME=web-1", "A=image", "B=pod"]);
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd_as_kubernetes_says() {
        let (e, c) = (vec!["/ep".to_owned()], vec!["cmd".to_owned()]);
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&e, &c, None, None), s(&["/ep", "cmd"]));
        assert_eq!(
            command_line(&e, &c, None, Some(&s(&["a"]))),
            s(&["/ep", "a"])
        );
        assert_eq!(command_line(&e, &c, Some(&s(&["sh"])), None), s(&["sh"]));
        assert_eq!(
            command_line(&e, &c, Some(&s(&["sh"])), Some(&s(&["-c", "x"]))),
            s(&["sh", "-c", "x"])
        );
    }

    #[test]
    fn users_resolve_by_number_or_by_name_in_the_image() {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(resolve_user("", passwd, group), Ok((0, 0)));
        assert_eq!(resolve_user("1000", passwd, group), Ok((1000, 0)));
        assert_eq!(resolve_user("1000:7", passwd, group), Ok((1000, 7)));
        assert_eq!(resolve_user("www", passwd, group), Ok((33, 34)));
        assert_eq!(resolve_user("www:staff", passwd, group), Ok((33, 50)));
        assert!(
            resolve_user("nobody", passwd, group)
                .unwrap_err()
                .contains("nobody")
        );
    }

    #[test]
    fn the_default_capabilities_are_docker_s_but_mknod() {
        let caps = default_capabilities();
        assert_eq!(caps.bits().count_ones(), 13);
        assert!(!caps.contains(CapabilitySet::MKNOD));
        assert!(!caps.contains(CapabilitySet::SYS_ADMIN));
        assert!(!caps.contains(CapabilitySet::NET_ADMIN));
    }
}
