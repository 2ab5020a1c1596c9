//! A container's cgroups: memory, pids and cpu limits, on whichever
//! hierarchy has each controller. Hosts mount the v2 unified tree, v1
//! hierarchies, or (as here) both, with the controllers split between
//! them; each controller is used where the kernel attached it.

use std::path::{Path, PathBuf};

/// The limits berth sets.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory: Option<u64>,
    /// Processes (and threads) at once.
    pub pids: Option<u64>,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
}

/// Where each controller is mounted.
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    /// The v2 tree and the controllers it offers.
    v2: Option<(PathBuf, Vec<String>)>,
    /// v1 mounts by controller.
    v1: Vec<(String, PathBuf)>,
}

/// `cpuacct` limits nothing: on a v1 host it is where CPU time is counted
/// (on v2 every cgroup's `cpu.stat` has it).
const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

impl Hierarchies {
    /// Read from /proc/self/mountinfo.
    pub fn detect() -> Hierarchies {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::parse(&text, |path| {
            std::fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    fn parse(mountinfo: &str, controllers_of: impl Fn(&Path) -> String) -> Hierarchies {
        let mut found = Hierarchies::default();
        for line in mountinfo.lines() {
            // "... mountpoint options - fstype source superoptions"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or("");
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or("");
            let super_options = right.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" if found.v2.is_none() => {
                    let path = PathBuf::from(mount_point);
                    let offered = controllers_of(&path)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect();
                    found.v2 = Some((path, offered));
                }
                "cgroup" => {
                    for option in super_options.split(',') {
                        if CONTROLLERS.contains(&option) {
                            found
                                .v1
                                .push((option.to_owned(), PathBuf::from(mount_point)));
                        }
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The cgroup.procs file of one line of /proc/PID/cgroup
    /// (`N:controllers:/path`, or `0::/path` for v2), on this host's mounts.
    pub fn procs_file_for(&self, line: &str) -> Option<PathBuf> {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let relative = path.trim_start_matches('/');
        let root = if controllers.is_empty() {
            self.v2.as_ref().map(|(root, _)| root.clone())?
        } else {
            let first = controllers.split(',').next()?;
            self.v1
                .iter()
                .find(|(c, _)| c == first)
                .map(|(_, root)| root.clone())?
        };
        Some(root.join(relative).join("cgroup.procs"))
    }

    /// The directory holding `controller` for the cgroup at `path` (under
    /// each hierarchy's root), and whether it is v2.
    pub(crate) fn place(&self, controller: &str, path: &Path) -> Option<(PathBuf, bool)> {
        if let Some((root, offered)) = &self.v2
            && offered.iter().any(|c| c == controller)
        {
            return Some((root.join(path), true));
        }
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, root)| (root.join(path), false))
    }

    /// The v2 tree's root, where it has a controller berth uses.
    fn v2_root(&self) -> Option<&Path> {
        self.v2.as_ref().map(|(root, _)| root.as_path())
    }
}

/// Where a container's cgroups are unless its caller says (see
/// [`crate::ContainerSpec::cgroup`]): `berth/NAME` under each hierarchy.
pub fn berth_path(name: &str) -> PathBuf {
    Path::new("berth").join(name)
}

/// One container's cgroups, removed by [`Cgroups::remove`].
#[derive(Debug)]
pub struct Cgroups {
    /// (directory, is v2), one per hierarchy used.
    dirs: Vec<(PathBuf, bool)>,
    memory: Option<(PathBuf, bool)>,
    cpu: Option<(PathBuf, bool)>,
}

/// Where a container's use is read: its cgroups' counters. Cheap to
/// clone, and readable for as long as the cgroups exist.
#[derive(Debug, Clone, Default)]
pub struct UsageFiles {
    memory: Option<(PathBuf, bool)>,
    cpu: Option<(PathBuf, bool)>,
}

/// How many processes of the memory cgroup `memory` (its directory, and
/// whether it is v2) the kernel's OOM killer has ended.
fn oom_kills(memory: Option<&(PathBuf, bool)>) -> u64 {
    let Some((dir, v2)) = memory else {
        return 0;
    };
    let file = if *v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

impl UsageFiles {
    /// Processes of the container the kernel's OOM killer has ended.
    pub fn oom_kills(&self) -> u64 {
        oom_kills(self.memory.as_ref())
    }

    /// CPU time the container's processes have used.
    pub fn cpu(&self) -> Option<std::time::Duration> {
        let (dir, v2) = self.cpu.as_ref()?;
        if *v2 {
            let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
            let micros = stat_field(&stat, "usage_usec")?;
            Some(std::time::Duration::from_micros(micros))
        } else {
            let nanos = std::fs::read_to_string(dir.join("cpuacct.usage")).ok()?;
            Some(std::time::Duration::from_nanos(nanos.trim().parse().ok()?))
        }
    }

    /// The working set, as the kubelet counts it: usage less the page
    /// cache the kernel may drop (inactive files).
    pub fn memory(&self) -> Option<u64> {
        let (dir, v2) = self.memory.as_ref()?;
        let (usage, inactive) = if *v2 {
            ("memory.current", "inactive_file")
        } else {
            ("memory.usage_in_bytes", "total_inactive_file")
        };
        let used: u64 = std::fs::read_to_string(dir.join(usage))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        Some(used.saturating_sub(stat_field(&stat, inactive).unwrap_or(0)))
    }
}

/// The value of `key` in a `key value` per line file (`cpu.stat`,
/// `memory.stat`).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroups {
    /// Creates the cgroup at `path` (under each hierarchy's root) on each
    /// hierarchy with a controller berth uses, with `limits` written.
    /// Without any hierarchy, nothing is limited.
    pub fn create(
        hierarchies: &Hierarchies,
        path: &Path,
        limits: &Limits,
    ) -> Result<Cgroups, crate::LinuxError> {
        let mut cgroups = Cgroups {
            dirs: Vec::new(),
            memory: None,
            cpu: None,
        };
        for controller in CONTROLLERS {
            let Some((dir, v2)) = hierarchies.place(controller, path) else {
                continue;
            };
            if !cgroups.dirs.iter().any(|(d, _)| d == &dir) {
                if v2 && let Some(root) = hierarchies.v2_root() {
                    // Controllers reach a v2 child only when each level
                    // above it passes them down, from the root.
                    let parent = dir.parent().expect("under the root");
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                    let mut levels = vec![root.to_owned()];
                    for part in path.parent().into_iter().flat_map(Path::components) {
                        let next = levels.last().expect("the root").join(part);
                        levels.push(next);
                    }
                    // One at a time, and only where not on yet: a write
                    // naming a controller that cannot be enabled fails whole.
                    for level in &levels {
                        let control = level.join("cgroup.subtree_control");
                        let on = std::fs::read_to_string(&control).unwrap_or_default();
                        for c in CONTROLLERS.iter().filter(|c| {
                            hierarchies.place(c, path).is_some_and(|(_, v2)| v2)
                                && !on.split_whitespace().any(|o| o == **c)
                        }) {
                            std::fs::write(&control, format!("+{c}"))
                                .map_err(|e| io(&control, e))?;
                        }
                    }
                }
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                cgroups.dirs.push((dir.clone(), v2));
            }
            let write = |file: &str, value: String| {
                let path = dir.join(file);
                std::fs::write(&path, value).map_err(|e| io(&path, e))
            };
            match controller {
                "memory" => {
                    cgroups.memory = Some((dir.clone(), v2));
                    if let Some(bytes) = limits.memory {
                        write(
                            if v2 {
                                "memory.max"
                            } else {
                                "memory.limit_in_bytes"
                            },
                            bytes.to_string(),
                        )?;
                        if v2 {
                            // Over the limit is over: no swapping instead.
                            let _ = write("memory.swap.max", "0".into());
                        } else {
                            let _ = write("memory.swappiness", "0".into());
                        }
                    }
                }
                "cpuacct" if !v2 => cgroups.cpu = Some((dir.clone(), v2)),
                "pids" => {
                    if let Some(max) = limits.pids {
                        write("pids.max", max.to_string())?;
                    }
                }
                "cpu" => {
                    if v2 {
                        cgroups.cpu = Some((dir.clone(), v2));
                    }
                    if let Some(millis) = limits.cpu_millis {
                        let period = 100_000u64;
                        let quota = millis.saturating_mul(period / 1000).max(1000);
                        if v2 {
                            write("cpu.max", format!("{quota} {period}"))?;
                        } else {
                            write("cpu.cfs_period_us", period.to_string())?;
                            write("cpu.cfs_quota_us", quota.to_string())?;
                        }
                    }
                }
                _ => {}
            }
        }
        if cgroups.cpu.is_none() {
            cgroups.cpu = cgroups.dirs.iter().find(|(_, v2)| *v2).cloned();
        }
        Ok(cgroups)
    }

    /// The cgroup at `path` where it exists: to remove what a container
    /// that ended unseen left.
    pub fn existing(hierarchies: &Hierarchies, path: &Path) -> Cgroups {
        let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
        for controller in CONTROLLERS {
            if let Some((dir, v2)) = hierarchies.place(controller, path)
                && dir.is_dir()
                && !dirs.iter().any(|(d, _)| d == &dir)
            {
                dirs.push((dir, v2));
            }
        }
        Cgroups {
            dirs,
            memory: None,
            cpu: None,
        }
    }

    /// Its directories, with whether each is on the v2 hierarchy.
    pub fn dirs(&self) -> &[(PathBuf, bool)] {
        &self.dirs
    }

    pub fn usage_files(&self) -> UsageFiles {
        UsageFiles {
            memory: self.memory.clone(),
            cpu: self.cpu.clone(),
        }
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(d, _)| d.join("cgroup.procs"))
            .collect()
    }

    /// Whether the kernel's OOM killer killed a process of the cgroup.
    pub fn oom_killed(&self) -> bool {
        oom_kills(self.memory.as_ref()) > 0
    }

    /// Removes the cgroups; their processes must have exited (a cgroup
    /// with members cannot go, so this retries briefly).
    pub fn remove(&self) {
        for (dir, _) in &self.dirs {
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> crate::LinuxError {
    crate::io_error(path.display())(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = "\
35 26 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
38 26 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 26 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
43 26 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn controllers_are_used_where_the_kernel_attached_them() {
        let h = Hierarchies::parse(MIXED, |_| "hugetlb".into());
        let (memory, v2) = h.place("memory", &berth_path("c1")).unwrap();
        assert_eq!(memory, Path::new("/sys/fs/cgroup/memory/berth/c1"));
        assert!(!v2);
        assert_eq!(
            h.place("pids", &berth_path("c1")).unwrap().0,
            Path::new("/sys/fs/cgroup/pids/berth/c1")
        );
        // On a pure v2 host, everything is in the one tree.
        let v2_only = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchies::parse(v2_only, |_| "cpuset cpu io memory pids".into());
        assert_eq!(
            h.place("cpu", &berth_path("c1")).unwrap(),
            (PathBuf::from("/sys/fs/cgroup/berth/c1"), true)
        );
    }
}

#[cfg(test)]
mod stat_tests {
    #[test]
    fn stat_files_are_read_by_key() {
        let stat = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(super::stat_field(stat, "usage_usec"), Some(1234));
        assert_eq!(super::stat_field(stat, "user"), None);
        assert_eq!(super::stat_field("", "usage_usec"), None);
    }
}
