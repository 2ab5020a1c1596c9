//! Who a container's process is: its uid, its gid and its supplementary
//! groups, from the image's `User`, its /etc/passwd and /etc/group, and the
//! pod's `runAsUser`, `runAsGroup`, `fsGroup` and `supplementalGroups`.
//!
//! Resolved as runc resolves them for Docker, and containerd for the
//! kubelet where the pod names ids: `runAsUser` replaces the image's user
//! (its gid then comes from the image's /etc/passwd entry for that uid,
//! else 0); `runAsGroup` replaces the image's group only; the process is
//! also in every group the image's /etc/group lists its user in, then in
//! the pod's groups. (An image `USER uid:gid` with no ids in the pod keeps
//! its gid, as under Docker; the kubelet would drop it.)
//! The init resolves this inside the container's own tree (its files
//! decide), so it is pure text in, ids out, and tested here.
//!
//! The kubelet's `runAsNonRoot` check needs no files: Kubernetes decides
//! it from the image's config alone (a user by name is refused, since its
//! uid cannot be known before the container exists), and so does berth,
//! before anything starts.

use super::config::User;

/// The ids a container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one first (as containerd lists
    /// them), each once.
    pub groups: Vec<u32>,
}

/// Why the image's user could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user {name:?} is not in the image's /etc/passwd")]
    UnknownUser { name: String },
    #[error("user {name:?}: bad /etc/passwd entry")]
    BadEntry { name: String },
    #[error("group {name:?} is not in the image's /etc/group")]
    UnknownGroup { name: String },
}

/// Resolves `user` with the image's /etc/passwd and /etc/group text.
pub fn resolve(user: &User, passwd: &str, group: &str) -> Result<Identity, UserError> {
    // runAsGroup replaces the image's group: it is never looked up (an
    // image naming a group it lacks still runs with one given).
    let image = match user.gid {
        Some(_) => user.image.split(':').next().unwrap_or_default(),
        None => user.image.as_str(),
    };
    let (uid, gid, name) = match user.uid {
        Some(uid) => {
            let account = by_uid(passwd, uid);
            (
                uid,
                account.as_ref().and_then(|f| number(f, 3)).unwrap_or(0),
                account.map(|f| f[0]),
            )
        }
        None => image_user(image, passwd, group)?,
    };
    let gid = user.gid.unwrap_or(gid);
    let mut groups = vec![gid];
    if let Some(name) = name {
        groups.extend(memberships(group, name));
    }
    groups.extend(&user.groups);
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(Identity { uid, gid, groups })
}

impl Identity {
    /// The first of its ids past the `ids` a user namespace maps, named as
    /// the pod or the image gave it.
    pub fn unmapped(&self, user: &User, ids: u32) -> Option<String> {
        let given = |overridden: Option<u32>, field: &str, image: &str, id: u32| match overridden {
            Some(_) => format!("{field} {id}"),
            None => format!("the image's {image} {id}"),
        };
        if self.uid >= ids {
            return Some(given(user.uid, "runAsUser", "user", self.uid));
        }
        if self.gid >= ids {
            return Some(given(user.gid, "runAsGroup", "group", self.gid));
        }
        self.groups
            .iter()
            .find(|g| **g >= ids)
            .map(|g| format!("supplementary group {g}"))
    }
}

/// The image's `User` (`uid`, `uid:gid`, `name` or `name:group`; empty for
/// root) as (uid, gid, the user's name where the image has one).
fn image_user<'a>(
    user: &str,
    passwd: &'a str,
    group: &str,
) -> Result<(u32, u32, Option<&'a str>), UserError> {
    if user.is_empty() {
        return Ok((0, 0, by_uid(passwd, 0).map(|f| f[0])));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let account = by_uid(passwd, uid);
            (
                uid,
                account.as_ref().and_then(|f| number(f, 3)),
                account.map(|f| f[0]),
            )
        }
        Err(_) => {
            let fields =
                by_name(passwd, u).ok_or_else(|| UserError::UnknownUser { name: u.to_owned() })?;
            let uid =
                number(&fields, 2).ok_or_else(|| UserError::BadEntry { name: u.to_owned() })?;
            (uid, number(&fields, 3), Some(fields[0]))
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => by_name(group, g)
                .and_then(|f| number(&f, 2))
                .ok_or_else(|| UserError::UnknownGroup { name: g.to_owned() })?,
        },
    };
    Ok((uid, gid, name))
}

/// The fields of the line of `text` (/etc/passwd or /etc/group) for `name`.
fn by_name<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
}

/// The first /etc/passwd line for `uid`, as runc takes it.
fn by_uid(passwd: &str, uid: u32) -> Option<Vec<&str>> {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| number(f, 2) == Some(uid))
}

fn number(fields: &[&str], at: usize) -> Option<u32> {
    fields.get(at)?.trim().parse().ok()
}

/// The groups /etc/group lists `name` as a member of (its own group by
/// name aside, as containerd leaves it).
fn memberships<'a>(group: &'a str, name: &'a str) -> impl Iterator<Item = u32> + 'a {
    group.lines().filter_map(move |line| {
        let fields: Vec<&str> = line.split(':').collect();
        let members = fields.get(3)?;
        (fields[0] != name && members.split(',').any(|m| m.trim() == name))
            .then(|| number(&fields, 2))
            .flatten()
    })
}

/// Why the kubelet refuses to start a container with `runAsNonRoot`
/// (Kubernetes' words; the kubelet adds which pod and container).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonRootError {
    #[error("container's runAsUser breaks non-root policy")]
    RunAsRoot,
    #[error("container has runAsNonRoot and image will run as root")]
    ImageRoot,
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"
    )]
    NonNumeric { user: String },
    #[error(
        "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({max})): must be between 0 and {max}, inclusive",
        max = i32::MAX
    )]
    InvalidUid { uid: i64 },
}

/// Kubernetes' `runAsNonRoot` check of a container whose image's `User` is
/// `image_user`, run as `run_as_user` when the pod says: from the image's
/// config alone, as the kubelet makes it.
pub fn check_non_root(image_user: &str, run_as_user: Option<u32>) -> Result<(), NonRootError> {
    if let Some(uid) = run_as_user {
        return if uid == 0 {
            Err(NonRootError::RunAsRoot)
        } else {
            Ok(())
        };
    }
    // The image's group plays no part; an image without a user runs as root.
    let user = image_user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return Err(NonRootError::ImageRoot);
    }
    match user.parse::<i64>() {
        Ok(0) => Err(NonRootError::ImageRoot),
        Ok(uid) if !(0..=i64::from(i32::MAX)).contains(&uid) => {
            Err(NonRootError::InvalidUid { uid })
        }
        Ok(_) => Ok(()),
        Err(_) => Err(NonRootError::NonNumeric {
            user: user.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n\
                          app:x:1000:1000::/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:\nwww:x:34:www\n\
                         app:x:1000:\naudio:x:63:www, app\n";

    fn user(image: &str, uid: Option<u32>, gid: Option<u32>, groups: &[u32]) -> User {
        User {
            image: image.to_owned(),
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn ids(u: &User) -> (u32, u32, Vec<u32>) {
        let identity = resolve(u, PASSWD, GROUP).unwrap();
        (identity.uid, identity.gid, identity.groups)
    }

    #[test]
    fn the_image_s_user_resolves_by_number_or_by_name_with_its_groups() {
        assert_eq!(ids(&user("", None, None, &[])), (0, 0, vec![0, 10]));
        // A number the image does not know: gid 0 and no groups.
        assert_eq!(ids(&user("4000", None, None, &[])), (4000, 0, vec![0]));
        // A number it knows takes its entry's group, as runc does.
        assert_eq!(
            ids(&user("1000", None, None, &[])),
            (1000, 1000, vec![1000, 10, 63])
        );
        assert_eq!(
            ids(&user("1000:7", None, None, &[])),
            (1000, 7, vec![7, 10, 63])
        );
        // www's own group by name is not a membership (it is its primary).
        assert_eq!(ids(&user("www", None, None, &[])), (33, 34, vec![34, 63]));
        assert_eq!(
            ids(&user("www:staff", None, None, &[])),
            (33, 50, vec![50, 63])
        );
        let unknown = |u: &User| resolve(u, PASSWD, GROUP).unwrap_err();
        assert_eq!(
            unknown(&user("nobody", None, None, &[])),
            UserError::UnknownUser {
                name: "nobody".into()
            }
        );
        assert_eq!(
            unknown(&user("www:nogroup", None, None, &[])),
            UserError::UnknownGroup {
                name: "nogroup".into()
            }
        );
    }

    #[test]
    fn run_as_user_and_group_override_the_image_s_as_containerd_does() {
        // runAsUser alone: the gid of that uid's entry, else 0.
        assert_eq!(
            ids(&user("www:staff", Some(1000), None, &[])),
            (1000, 1000, vec![1000, 10, 63])
        );
        assert_eq!(ids(&user("www", Some(4242), None, &[])), (4242, 0, vec![0]));
        // runAsGroup alone keeps the image's uid; its group is not looked up.
        assert_eq!(
            ids(&user("www:nogroup", None, Some(3000), &[])),
            (33, 3000, vec![3000, 63])
        );
        assert_eq!(
            ids(&user("", None, Some(3000), &[])),
            (0, 3000, vec![3000, 10])
        );
        assert_eq!(
            ids(&user("www", Some(4242), Some(4343), &[])),
            (4242, 4343, vec![4343])
        );
    }

    #[test]
    fn the_pod_s_groups_come_after_the_image_s_each_once() {
        assert_eq!(
            ids(&user("app", Some(1000), Some(3000), &[2000, 10, 3000, 5])),
            (1000, 3000, vec![3000, 10, 63, 2000, 5])
        );
    }

    #[test]
    fn ids_past_a_user_namespace_are_named_by_where_they_came_from() {
        let identity = |u: &User| resolve(u, PASSWD, GROUP).unwrap();
        let far = user("70000:70000", None, None, &[]);
        assert_eq!(
            identity(&far).unmapped(&far, 65536).as_deref(),
            Some("the image's user 70000")
        );
        let far = user("", Some(70000), None, &[]);
        assert_eq!(
            identity(&far).unmapped(&far, 65536).as_deref(),
            Some("runAsUser 70000")
        );
        let far = user("", Some(1000), Some(70000), &[]);
        assert_eq!(
            identity(&far).unmapped(&far, 65536).as_deref(),
            Some("runAsGroup 70000")
        );
        let far = user("", Some(1000), None, &[70000]);
        assert_eq!(
            identity(&far).unmapped(&far, 65536).as_deref(),
            Some("supplementary group 70000")
        );
        let near = user("", Some(1000), Some(1000), &[2000]);
        assert_eq!(identity(&near).unmapped(&near, 65536), None);
    }

    #[test]
    fn run_as_non_root_is_checked_as_the_kubelet_checks_it() {
        use NonRootError::*;
        assert_eq!(check_non_root("", None), Err(ImageRoot));
        assert_eq!(check_non_root("0:1000", None), Err(ImageRoot));
        assert_eq!(check_non_root("1000", None), Ok(()));
        assert_eq!(check_non_root("1000:0", None), Ok(()));
        assert_eq!(
            check_non_root("app:staff", None),
            Err(NonNumeric { user: "app".into() })
        );
        assert_eq!(
            check_non_root("3000000000", None),
            Err(InvalidUid { uid: 3_000_000_000 })
        );
        // runAsUser decides alone, whatever the image says.
        assert_eq!(check_non_root("app", Some(1000)), Ok(()));
        assert_eq!(check_non_root("1000", Some(0)), Err(RunAsRoot));
        assert_eq!(
            NonNumeric { user: "app".into() }.to_string(),
            "container has runAsNonRoot and image has non-numeric user (app), \
             cannot verify user is non-root"
        );
    }
}
