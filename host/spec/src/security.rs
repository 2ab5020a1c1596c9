//! `securityContext`, pod and container, as berth gives it meaning.
//!
//! Ordinary charts set these on every workload, so berth accepts them and
//! honours what its backends can: a Linux container runs as `runAsUser` /
//! `runAsGroup`, is refused if `runAsNonRoot` would be broken, gets a
//! read-only root with `readOnlyRootFilesystem`, and keeps or loses the
//! capabilities named. A wasm guest has no users, root filesystem or
//! capabilities (it can only do what its grants allow), so those settings
//! are satisfied by construction. What would grant more than berth gives
//! (`privileged`, privilege escalation, an unconfined seccomp profile, or
//! capabilities added to a wasm guest) is refused with the field named.

use serde::{Deserialize, Serialize};

/// `spec.securityContext` of a pod: defaults for its containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// A group every container of the pod also runs in, that owns the
    /// pod's emptyDir volumes (group-writable), as the kubelet applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    /// Groups every container also runs in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// `securityContext` of a container: it overrides the pod's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// What one container runs with, its own settings over its pod's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: bool,
    pub read_only_root_filesystem: bool,
    /// `fsGroup` and `supplementalGroups`.
    pub extra_groups: Vec<u32>,
    /// Capability names without `CAP_`, upper case; `ALL` may appear.
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

/// The settings of `container` over those of `pod`, ids already checked
/// to fit in 32 bits by validation.
pub fn effective(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
) -> Effective {
    let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let caps = container.and_then(|c| c.capabilities.as_ref());
    let names = |list: Option<&Vec<String>>| -> Vec<String> {
        list.into_iter()
            .flatten()
            .map(|c| capability_name(c).to_owned())
            .collect()
    };
    let mut extra_groups: Vec<u32> = pod
        .into_iter()
        .flat_map(|p| {
            p.fs_group
                .into_iter()
                .chain(p.supplemental_groups.iter().copied())
        })
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    extra_groups.dedup();
    Effective {
        run_as_user: id(container
            .and_then(|c| c.run_as_user)
            .or(pod.and_then(|p| p.run_as_user))),
        run_as_group: id(container
            .and_then(|c| c.run_as_group)
            .or(pod.and_then(|p| p.run_as_group))),
        run_as_non_root: container
            .and_then(|c| c.run_as_non_root)
            .or(pod.and_then(|p| p.run_as_non_root))
            .unwrap_or(false),
        read_only_root_filesystem: container
            .and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
        extra_groups,
        add: names(caps.map(|c| &c.add)),
        drop: names(caps.map(|c| &c.drop)),
    }
}

/// `NET_ADMIN` for `NET_ADMIN` or `CAP_NET_ADMIN`, as the kubelet reads
/// them.
pub fn capability_name(name: &str) -> &str {
    name.strip_prefix("CAP_").unwrap_or(name)
}

/// The capabilities Linux has, by their names without `CAP_`.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Checks what berth cannot honour; `(field path, message)` of the first.
pub fn check_pod(context: &PodSecurityContext, path: &str) -> Result<(), (String, String)> {
    for (field, id) in [
        ("runAsUser", context.run_as_user),
        ("runAsGroup", context.run_as_group),
        ("fsGroup", context.fs_group),
    ] {
        check_id(id, &format!("{path}.{field}"))?;
    }
    for (i, group) in context.supplemental_groups.iter().enumerate() {
        check_id(Some(*group), &format!("{path}.supplementalGroups[{i}]"))?;
    }
    check_seccomp(context.seccomp_profile.as_ref(), path)
}

/// [`check_pod`] for a container's context.
pub fn check_container(context: &SecurityContext, path: &str) -> Result<(), (String, String)> {
    check_id(context.run_as_user, &format!("{path}.runAsUser"))?;
    check_id(context.run_as_group, &format!("{path}.runAsGroup"))?;
    if context.privileged == Some(true) {
        return Err((
            format!("{path}.privileged"),
            "berth does not run privileged containers (grant capabilities instead)".into(),
        ));
    }
    if context.allow_privilege_escalation == Some(true) {
        return Err((
            format!("{path}.allowPrivilegeEscalation"),
            "berth always sets no_new_privs: a process never gains privileges it was not \
             started with (leave it unset or false)"
                .into(),
        ));
    }
    if let Some(caps) = &context.capabilities {
        for (list, names) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (i, name) in names.iter().enumerate() {
                let bare = capability_name(name);
                if !(CAPABILITIES.contains(&bare) || (list == "drop" && name == "ALL")) {
                    return Err((
                        format!("{path}.capabilities.{list}[{i}]"),
                        format!("{name:?} is not a Linux capability"),
                    ));
                }
            }
        }
    }
    check_seccomp(context.seccomp_profile.as_ref(), path)
}

fn check_id(id: Option<i64>, path: &str) -> Result<(), (String, String)> {
    match id {
        Some(id) if u32::try_from(id).is_err() || id == i64::from(u32::MAX) => Err((
            path.to_owned(),
            format!("{id} is not a user or group id (0 to 4294967294)"),
        )),
        _ => Ok(()),
    }
}

fn check_seccomp(profile: Option<&SeccompProfile>, path: &str) -> Result<(), (String, String)> {
    match profile {
        Some(p) if p.kind != "RuntimeDefault" => Err((
            format!("{path}.seccompProfile.type"),
            format!(
                "{:?}: berth applies its own profile to every container (RuntimeDefault)",
                p.kind
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_setting_overrides_its_pods() {
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(1000),
            run_as_non_root: Some(true),
            fs_group: Some(2000),
            ..PodSecurityContext::default()
        };
        let container = SecurityContext {
            run_as_user: Some(1001),
            capabilities: Some(Capabilities {
                add: vec!["CAP_NET_ADMIN".into()],
                drop: vec!["ALL".into()],
            }),
            ..SecurityContext::default()
        };
        let e = effective(Some(&pod), Some(&container));
        assert_eq!(e.run_as_user, Some(1001));
        assert_eq!(e.run_as_group, Some(1000));
        assert!(e.run_as_non_root);
        assert_eq!(e.extra_groups, [2000]);
        assert_eq!(e.add, ["NET_ADMIN"]);
        assert_eq!(e.drop, ["ALL"]);
    }

    #[test]
    fn every_capability_a_pod_may_name_is_one_bit_of_the_kernel_s() {
        use berth_linux::plan::capability;
        for name in CAPABILITIES {
            let set = capability(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(set.bits().count_ones(), 1, "{name}");
            assert_eq!(capability(&format!("CAP_{name}")), Ok(set));
        }
    }

    #[test]
    fn grants_berth_cannot_give_are_refused_by_path() {
        let refused = |c: SecurityContext| check_container(&c, "c").unwrap_err().0;
        let privileged = SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        };
        assert_eq!(refused(privileged), "c.privileged");
        let escalating = SecurityContext {
            allow_privilege_escalation: Some(true),
            ..SecurityContext::default()
        };
        assert_eq!(refused(escalating), "c.allowPrivilegeEscalation");
        let unknown = SecurityContext {
            capabilities: Some(Capabilities {
                add: vec!["FLY".into()],
                drop: vec![],
            }),
            ..SecurityContext::default()
        };
        assert_eq!(refused(unknown), "c.capabilities.add[0]");
        let unconfined = SecurityContext {
            seccomp_profile: Some(SeccompProfile {
                kind: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        };
        assert_eq!(refused(unconfined), "c.seccompProfile.type");
        let negative = SecurityContext {
            run_as_user: Some(-1),
            ..SecurityContext::default()
        };
        assert_eq!(refused(negative), "c.runAsUser");
        let fine = SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        };
        assert!(check_container(&fine, "c").is_ok());
    }
}
