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

/// Why a capability a container asks for is not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("{name:?} is not a Linux capability")]
    Unknown { name: String },
    /// See [`default_capabilities`]: a device node made in a container
    /// would open the host's device.
    #[error(
        "berth does not grant {name}: it has no devices cgroup to make a device node in a \
         container harmless (a block device node would open the host's disk)"
    )]
    Withheld { name: String },
}

/// The capabilities of a container whose spec adds `add` and drops `drop`
/// (names with or without `CAP_`; `ALL` in `drop` drops every one), as
/// containerd computes them for the kubelet: from the default set, `ALL`
/// first, then each one added, then each one dropped, so a capability
/// both added and dropped is dropped.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<CapabilitySet, CapabilityError> {
    let is_all = |name: &String| name.eq_ignore_ascii_case("ALL");
    let mut set = if drop.iter().any(is_all) {
        CapabilitySet::empty()
    } else {
        default_capabilities()
    };
    for name in add {
        let capability = capability(name)?;
        if capability == CapabilitySet::MKNOD {
            return Err(CapabilityError::Withheld {
                name: "MKNOD".into(),
            });
        }
        set |= capability;
    }
    for name in drop.iter().filter(|name| !is_all(name)) {
        set -= capability(name)?;
    }
    Ok(set)
}

/// One capability by its name (`NET_ADMIN`, `CAP_NET_ADMIN`, any case):
/// rustix names its constants as the kernel does, without `CAP_`.
pub fn capability(name: &str) -> Result<CapabilitySet, CapabilityError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CapabilitySet::from_name(bare)
        // One bit: never the catch-all every bitflags type carries.
        .filter(|set| set.bits().count_ones() == 1)
        .ok_or_else(|| CapabilityError::Unknown {
            name: name.to_owned(),
        })
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
    fn the_default_capabilities_are_docker_s_but_mknod() {
        let caps = default_capabilities();
        assert_eq!(caps.bits().count_ones(), 13);
        assert!(!caps.contains(CapabilitySet::MKNOD));
        assert!(!caps.contains(CapabilitySet::SYS_ADMIN));
        assert!(!caps.contains(CapabilitySet::NET_ADMIN));
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_capability_is_named_as_the_kernel_names_it() {
        assert_eq!(capability("NET_ADMIN"), Ok(CapabilitySet::NET_ADMIN));
        assert_eq!(capability("cap_net_admin"), Ok(CapabilitySet::NET_ADMIN));
        // bit 12 in /proc/PID/status, as `capsh --decode` says.
        assert_eq!(CapabilitySet::NET_ADMIN.bits(), 1 << 12);
        assert_eq!(
            capability("FLY"),
            Err(CapabilityError::Unknown { name: "FLY".into() })
        );
        assert!(capability("").is_err());
    }

    #[test]
    fn drop_all_then_add_then_drop_as_containerd_does() {
        let set = |add: &[&str], drop: &[&str]| capabilities(&names(add), &names(drop));
        assert_eq!(set(&[], &[]), Ok(default_capabilities()));
        assert_eq!(set(&[], &["ALL"]), Ok(CapabilitySet::empty()));
        // ALL goes first, whatever its place in the list.
        assert_eq!(
            set(&["NET_ADMIN"], &["CHOWN", "ALL"]),
            Ok(CapabilitySet::NET_ADMIN)
        );
        assert_eq!(
            set(&["CAP_SYS_TIME"], &["NET_RAW", "KILL"]),
            Ok((default_capabilities() | CapabilitySet::SYS_TIME)
                - CapabilitySet::NET_RAW
                - CapabilitySet::KILL)
        );
        // Added and dropped: dropped.
        assert_eq!(
            set(&["NET_ADMIN"], &["ALL", "NET_ADMIN"]),
            Ok(CapabilitySet::empty())
        );
        assert_eq!(
            set(&["MKNOD"], &["ALL"]),
            Err(CapabilityError::Withheld {
                name: "MKNOD".into()
            })
        );
        assert!(matches!(
            set(&[], &["FLY"]),
            Err(CapabilityError::Unknown { .. })
        ));
    }
}
