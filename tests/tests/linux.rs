//! The namespace backend: Linux images run as containers, isolated from the
//! host and from each other, limited, and cleaned up. Needs root (CI runs
//! as root) and Debian's busybox-static.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::{berth, busybox};

/// `berth run busybox:1 -- sh -c SCRIPT` in `home`: (exit code, stdout, stderr).
fn run_sh(home: &Path, extra: &[&str], script: &str) -> (i32, String, String) {
    run_sh_env(home, extra, &[], script)
}

/// [`run_sh`] with berth given `env` too.
fn run_sh_env(
    home: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    script: &str,
) -> (i32, String, String) {
    let mut args = vec!["run", "busybox:1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = std::process::Command::new(berth_tests::berth_bin())
        .args(&args)
        .env("BERTH_HOME", home)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn home_with_busybox() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    busybox::load(home.path(), "busybox:1");
    home
}

#[test]
fn the_container_is_pid_1_under_its_own_hostname() {
    let home = home_with_busybox();
    let (code, out, err) = run_sh(
        home.path(),
        &[],
        "echo $$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ps | wc -l",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_eq!(lines[1], "busybox", "{out}");
    assert!(lines[2].starts_with("sh -c"), "{out}");
    // ps's header, sh and ps itself (and wc): nothing of the host.
    let processes: usize = lines[3].trim().parse().unwrap();
    assert!(processes <= 4, "{out}");
}

#[test]
fn the_container_keeps_docker_s_capabilities_but_mknod_under_no_new_privs_and_seccomp() {
    let home = home_with_busybox();
    let (code, out, err) = run_sh(
        home.path(),
        &[],
        "grep -E '^(CapEff|CapBnd|CapInh|NoNewPrivs|Seccomp):' /proc/self/status; mount -t tmpfs none /tmp 2>&1 || echo mount-refused; mknod /tmp/disk b 8 0 2>/dev/null || echo mknod-refused; (: < /dev/tty) 2>/dev/null || echo no-tty",
    );
    assert_eq!(code, 0, "{err}");
    // Docker's default capabilities but MKNOD (no devices cgroup here to
    // make a new node harmless), in effect and as the bound.
    assert!(out.contains("CapEff:\t00000000a00425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a00425fb"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("mount-refused"), "{out}");
    assert!(out.contains("mknod-refused"), "{out}");
    // A session of its own: no terminal of berth's to read or type into.
    assert!(out.contains("no-tty"), "{out}");
}

#[test]
fn the_container_s_root_is_an_unprivileged_stranger_to_the_host() {
    let home = home_with_busybox();
    let volume = tempfile::tempdir().unwrap();
    let dir = format!("{}:/data:rw", volume.path().display());
    let (code, out, err) = run_sh(
        home.path(),
        &["--dir", &dir],
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /etc/written /data/made && echo wrote; \
         ls -ln /bin/busybox; httpd -f -p 80 & sleep 0.3; kill $! && echo bound; \
         ping -c1 -W5 127.0.0.1 >/dev/null && echo pinged",
    );
    assert_eq!(code, 0, "{out}{err}");
    // Ids 0-65535 of the container are a block of host ids of their own.
    let maps: Vec<Vec<u64>> = out
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    for map in &maps {
        assert_eq!(map[0], 0, "{out}");
        assert!(map[1] >= 1 << 24, "{out}");
        assert_eq!(map[2], 65536, "{out}");
    }
    let lines: Vec<&str> = out.lines().collect();
    // Root inside, owning the image's files and writing into its own
    // layer and the volume; able to listen on a low port.
    assert_eq!(lines[2], "0", "{out}");
    assert_eq!(lines[3], "wrote", "{out}");
    assert!(
        lines[4].contains(" 0 ") && lines[4].contains(" 0 "),
        "{out}"
    );
    assert!(out.contains("bound"), "{out}{err}");
    // Its network namespace is its user namespace's: its root may open a
    // raw socket there (busybox's ping does), as under userns-remap.
    assert!(out.contains("pinged"), "{out}{err}");
    // What it made in the volume is host root's on disk (an idmapped
    // mount), not a stranger's id the host would have to chown back.
    use std::os::unix::fs::MetadataExt as _;
    let made = std::fs::metadata(volume.path().join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0));

    // --userns host: the host's ids, as Docker runs containers.
    // Any user may ping with an ICMP datagram socket, as under Docker (read
    // here, as host ids: a user namespace shows unmapped gids as 65534).
    let (code, out, err) = run_sh(
        home.path(),
        &["--userns", "host"],
        "cat /proc/self/uid_map /proc/sys/net/ipv4/ping_group_range",
    );
    assert_eq!(code, 0, "{err}");
    let map: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(map, ["0", "0", "4294967295", "0", "2147483647"], "{out}");
}

#[test]
fn the_exit_code_is_the_container_s() {
    let home = home_with_busybox();
    assert_eq!(run_sh(home.path(), &[], "exit 7").0, 7);
    // A program that is not there: 127 and a message naming it.
    let out = std::process::Command::new(berth_tests::berth_bin())
        .args(["run", "busybox:1", "--", "/bin/nothing-here"])
        .env("BERTH_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing-here"));
    // Nothing to run at all fails at once in the container's process,
    // and says so whole (not mixed with the init's word of the start).
    let archive = busybox::archive(&[busybox::layer()], serde_json::json!({}), "idle:1");
    busybox::load_archive(home.path(), &archive);
    let out = berth(home.path(), &["run", "idle:1"]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("idle:1: nothing to run: the image has no Entrypoint or Cmd"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("started "), "{}", out.stderr);
}

#[test]
fn host_files_processes_and_interfaces_are_out_of_sight() {
    let home = home_with_busybox();
    let marker = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "ls /; test -e {} && echo HOST-FILE-VISIBLE; ls /proc | grep -c '^[0-9]'; ip -o link | cut -d: -f2; cat /proc/kcore | wc -c; echo x > /proc/sys/kernel/hostname 2>&1 || echo proc-sys-read-only",
        marker.path().display()
    );
    let (code, out, err) = run_sh(home.path(), &[], &script);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("HOST-FILE-VISIBLE"), "{out}");
    assert!(out.contains("bin") && out.contains("www"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let position = lines
        .iter()
        .position(|l| l.trim().parse::<u32>().is_ok())
        .unwrap();
    let pids: u32 = lines[position].trim().parse().unwrap();
    assert!(pids <= 4, "processes visible: {out}");
    // Only loopback.
    let links: Vec<&str> = lines[position + 1..]
        .iter()
        .take_while(|l| l.trim().parse::<u32>().is_err())
        .map(|l| l.trim())
        .collect();
    assert_eq!(links, ["lo"], "{out}");
    assert!(out.contains("proc-sys-read-only"), "{out}");
}

#[test]
fn a_memory_hog_is_oom_killed_and_a_fork_bomb_stops_at_the_pids_limit() {
    let home = home_with_busybox();
    // 64 MiB allowed; the hog asks for 256 MiB.
    let (code, _, err) = run_sh(
        home.path(),
        &["--memory", "64Mi"],
        "exec dd if=/dev/zero of=/dev/null bs=256M count=1",
    );
    assert_eq!(code, 137, "{err}");
    assert!(err.contains("OOMKilled"), "{err}");

    let started = Instant::now();
    let (code, out, err) = run_sh(
        home.path(),
        &["--pids-limit", "32"],
        // The bomb in a subshell (a shell that cannot fork gives up), then
        // counted with builtins only: at the limit, nothing more forks.
        "(for i in $(seq 1 100); do sleep 5 & done) 2>/dev/null; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n; exit 0",
    );
    assert_eq!(code, 0, "{out}{err}");
    let seen: u32 = out.trim().lines().last().unwrap().trim().parse().unwrap();
    assert!(seen <= 34, "{seen} processes with a limit of 32");
    assert!(started.elapsed() < Duration::from_secs(30));
    // And the host still forks.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn nothing_of_a_container_is_left_after_it_exits() {
    let home = home_with_busybox();
    let (code, out, err) = run_sh(
        home.path(),
        &[],
        // A sleep of its own length: another test's container sleeps 300.
        "echo hi > /tmp/x; sleep 317 & cat /proc/self/cgroup",
    );
    assert_eq!(code, 0, "{err}");
    let containers = home.path().join("containers");
    let left = std::fs::read_dir(&containers).map_or(0, |d| d.count());
    assert_eq!(left, 0, "state dirs left in {}", containers.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(home.path().to_str().unwrap()), "{mounts}");
    // Its cgroups (as it saw them, "N:controller:/berth/ID") are gone, and
    // so is the process it left behind.
    let mut checked = 0;
    for line in out.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (
            fields.next(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        if !path.starts_with("/berth/") {
            continue;
        }
        for controller in controllers.split(',') {
            let dir = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(&path[1..]);
            assert!(!dir.exists(), "{} is left", dir.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "no berth cgroups seen: {out}");
    // Killed with its pid namespace, which the kernel does without
    // waiting: gone within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sleepers = std::process::Command::new("pgrep")
            .args(["-fx", "sleep 317"])
            .output()
            .unwrap();
        if sleepers.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container's orphan still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_image_with_a_hostile_layer_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    // Path traversal, written raw: the tar crate refuses to build it.
    header.as_old_mut().name[..17].copy_from_slice(b"../../escaped.txt");
    header.set_cksum();
    tar.append(&header, &b"evil"[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let archive = busybox::archive(
        &[layer],
        serde_json::json!({"Cmd": ["/bin/sh"]}),
        "hostile:1",
    );
    busybox::load_archive(home.path(), &archive);
    let out = berth(home.path(), &["run", "hostile:1"]);
    assert!(!out.success);
    assert!(out.stderr.contains(".."), "{}", out.stderr);
    assert!(!home.path().join("escaped.txt").exists());
}

/// A daemon with the busybox image and the misbehave guest (`mb:1`).
fn daemon_with_images(home: &Path) -> (berth_tests::BerthRun, String) {
    busybox::load(home, "busybox:1");
    berth_tests::kube::build_image(home, Path::new(berth_tests::guests::MISBEHAVE), "mb:1");
    let daemon = berth_tests::BerthRun::start_command(home, &["daemon", "--backoff-base", "200ms"]);
    let ingress = daemon.ingress();
    (daemon, ingress)
}

fn apply(home: &Path, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = berth_tests::kube::write(dir.path(), "app.yaml", text);
    berth_tests::ok(berth(home, &["apply", "-f", &file]));
}

const HTTPD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox:1
        command: [sh, -c, 'hostname > /www/name; mkdir /stats; echo stats > /stats/s; httpd -p 9090 -h /stats; exec httpd -f -p 8080 -h /www']
        ports: [{containerPort: 8080}, {containerPort: 9090, name: stats}]
        readinessProbe: {httpGet: {path: /name, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: stats, port: 9090, targetPort: stats}]
---
apiVersion: v1
kind: Pod
metadata: {name: caller, labels: {app: caller}}
spec:
  containers: [{name: app, image: "mb:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: caller}
spec:
  selector: {app: caller}
  ports: [{port: 80}]
"#;

#[tokio::test]
async fn busybox_httpd_replicas_answer_through_the_router_and_to_a_wasm_pod() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, ingress) = daemon_with_images(home.path());
    apply(home.path(), HTTPD);
    let ready = berth_tests::kube::wait_ready(home.path(), 3);
    let replicas: Vec<&str> = ready
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|n| n.starts_with("web-"))
        .collect();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let reply = berth_tests::send(
            "GET",
            &format!("{ingress}/name"),
            &[("host", "web.localhost")],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *seen.entry(reply.text().trim().to_owned()).or_default() += 1;
    }
    // Each replica answers with its own hostname, the pod's name, evenly.
    let mut names: Vec<&str> = seen.keys().map(String::as_str).collect();
    names.sort();
    let mut expected = replicas.clone();
    expected.sort();
    assert_eq!(names, expected, "{seen:?}");
    assert!(seen.values().all(|n| *n == 10), "{seen:?}");
    // A wasm guest calls the Linux service by name.
    let reply = berth_tests::send(
        "GET",
        &format!("{ingress}/fetch?url=http://web/index.html"),
        &[("host", "caller.localhost")],
        Vec::new(),
    )
    .await;
    assert!(
        reply.text().contains("200 OK: hello from busybox"),
        "{}",
        reply.text()
    );
    // The second service port reaches the containers' second port, by name.
    let service = berth_tests::ok(berth(home.path(), &["get", "service", "web", "-o", "json"]));
    let service: serde_json::Value = serde_json::from_str(&service.stdout).unwrap();
    let node_port = service["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
    let host = ingress
        .trim_start_matches("http://")
        .rsplit_once(':')
        .unwrap()
        .0;
    assert!(berth_tests::wait_for_port(
        &format!("{host}:{node_port}"),
        Duration::from_secs(10)
    ));
    let reply = berth_tests::send(
        "GET",
        &format!("http://{host}:{node_port}/s"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.text(), "stats\n");
}

#[tokio::test]
async fn a_container_that_ignores_sigterm_is_killed_after_the_grace_period_and_cleaned_up() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'trap "" TERM; echo started; while true; do sleep 1; done']
"#,
    );
    berth_tests::kube::wait_ready(home.path(), 1);
    let pod = &berth_tests::kube::pods(home.path())[0];
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    let pod_dir = home.path().join("pods").join(&uid);
    assert!(pod_dir.join("containers/app-0").exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth(home.path(), &["logs", "stubborn"])
        .stdout
        .contains("started")
    {
        assert!(Instant::now() < deadline, "no output in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    berth_tests::ok(berth(home.path(), &["delete", "pod", "stubborn"]));
    while pod_dir.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the pod dir stays"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "stopped before the grace period: {took:?}"
    );
    let sleepers = std::process::Command::new("pgrep")
        .args(["-f", "trap \"\" TERM"])
        .output()
        .unwrap();
    assert!(sleepers.stdout.is_empty(), "the container still runs");
}

#[tokio::test]
async fn a_container_that_exits_is_restarted_and_its_exit_shown() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'echo run; sleep 0.2; exit 3']
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'exit 0']
---
apiVersion: v1
kind: Pod
metadata: {name: unbuildable}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox:1
    workingDir: /proc/nowhere
    command: [sh, -c, 'exit 0']
"#,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let unbuildable = loop {
        let pods = berth_tests::kube::pods(home.path());
        let by = |n: &str| {
            pods.iter()
                .find(|p| p["metadata"]["name"] == n)
                .cloned()
                .unwrap()
        };
        let restarts = by("flaky")["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap_or(0);
        let once = by("once")["status"]["phase"].clone();
        let unbuildable = by("unbuildable");
        if restarts >= 2 && once == "Succeeded" && unbuildable["status"]["phase"] == "Failed" {
            break unbuildable;
        }
        assert!(Instant::now() < deadline, "{pods:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let events = berth_tests::ok(berth(home.path(), &["get", "events"])).stdout;
    assert!(
        events.contains("Container app exited with code 3 (Error)"),
        "{events}"
    );
    assert!(
        events.contains("Container app exited with code 0 (Completed)"),
        "{events}"
    );
    // Set-up that fails inside the container's init reaches the pod's
    // status with what failed, as the init reported it.
    let status = unbuildable["status"].to_string();
    assert!(
        status.contains("could not run (code 125): working dir /proc/nowhere"),
        "{status}"
    );
}

#[test]
fn a_linux_image_pushed_through_berth_s_registry_pulls_and_runs_elsewhere() {
    let home = home_with_busybox();
    let registry_dir = tempfile::tempdir().unwrap();
    let root = registry_dir.path().join("registry");
    let registry = berth_tests::registry_serve(&root, &[]);
    let remote = format!(
        "{}/tools/busybox:1",
        registry.url.trim_start_matches("http://")
    );
    berth_tests::ok(berth(home.path(), &["tag", "busybox:1", &remote]));
    berth_tests::ok(berth(home.path(), &["push", &remote]));
    let elsewhere = tempfile::tempdir().unwrap();
    berth_tests::ok(berth(elsewhere.path(), &["pull", &remote]));
    let out = std::process::Command::new(berth_tests::berth_bin())
        .args([
            "run",
            &remote,
            "--",
            "sh",
            "-c",
            "echo pulled and running as $(hostname)",
        ])
        .env("BERTH_HOME", elsewhere.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pulled and running as busybox\n"
    );
}

#[test]
fn probes_reach_the_container_s_own_ports() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    let pod = |name: &str, probe: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: busybox:1\n    command: [httpd, -f, -p, '8080', -h, /www]\n    ports: [{{containerPort: 8080, name: web}}]\n    readinessProbe: {{{probe}, periodSeconds: 1}}\n---\n"
        )
    };
    // An exec probe runs in the container: it sees the file its process
    // made, in its own /tmp.
    let exec = |name: &str, file: &str| {
        pod(name, &format!("exec: {{command: [test, -e, {file}]}}")).replace(
            "command: [httpd, -f, -p, '8080', -h, /www]",
            "command: [sh, -c, 'touch /tmp/made; exec httpd -f -p 8080 -h /www']",
        )
    };
    apply(
        home.path(),
        &(pod("open", "tcpSocket: {port: web}")
            + &pod("page", "httpGet: {path: /index.html, port: 8080}")
            + &exec("inside", "/tmp/made")
            // …and in its user namespace, not with the host's ids.
            + &pod(
                "mapped",
                r#"exec: {command: [sh, -c, 'grep -qv "^ *0 *0 " /proc/self/uid_map']}"#,
            )
            + &pod("closed", "tcpSocket: {port: 9999}")
            + &pod("missing", "httpGet: {path: /nothing, port: 8080}")
            + &exec("absent", "/tmp/never")),
    );
    let ready = |name: &str| {
        berth_tests::kube::pods(home.path())
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .is_some_and(berth_tests::kube::is_ready)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(ready("open") && ready("page") && ready("inside") && ready("mapped")) {
        assert!(
            Instant::now() < deadline,
            "open, page, inside and mapped did not all turn ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several probe periods on, the others still fail theirs.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ready("closed"),
        "a probe of a port nothing listens on passed"
    );
    assert!(!ready("missing"), "a probe of a 404 passed");
    assert!(!ready("absent"), "an exec probe that exits 1 passed");
}

#[test]
fn runtime_class_name_holds_a_pod_to_one_backend() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    let pod = |name: &str, image: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: {class}\n  restartPolicy: Never\n  containers: [{{name: app, image: '{image}'}}]\n---\n"
        )
    };
    apply(
        home.path(),
        &(pod("wasm-as-linux", "mb:1", "linux") + &pod("linux-as-wasm", "busybox:1", "wasm")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = berth_tests::kube::pods(home.path());
        let failed: Vec<String> = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Failed")
            .map(|p| p["status"]["message"].as_str().unwrap_or("").to_owned())
            .collect();
        if failed.len() == 2 {
            assert!(
                failed
                    .iter()
                    .any(|m| m.contains("runtimeClassName linux, but image")),
                "{failed:?}"
            );
            assert!(
                failed
                    .iter()
                    .any(|m| m.contains("runtimeClassName wasm, but image")),
                "{failed:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{pods:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And a class berth does not have is refused at apply.
    let dir = tempfile::tempdir().unwrap();
    let file = berth_tests::kube::write(dir.path(), "bad.yaml", &pod("odd", "busybox:1", "gvisor"));
    let out = berth(home.path(), &["apply", "-f", &file]);
    assert!(!out.success);
    assert!(out.stderr.contains("runtimeClassName"), "{}", out.stderr);
}

#[test]
fn the_init_keeps_the_host_s_root_however_late_it_runs() {
    // The init writes the container's pid after forking it; delayed there
    // (strace holds each clone 20 ms), it must still write on the host,
    // not inside the root the container has pivoted into.
    let home = home_with_busybox();
    for _ in 0..3 {
        let out = std::process::Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", "inject=clone:delay_exit=20000"])
            .arg(berth_tests::berth_bin())
            .args(["run", "busybox:1", "--", "/bin/true"])
            .env("BERTH_HOME", home.path())
            .output()
            .expect("strace is required for this test (Debian package strace; tests/prepare.sh installs it)");
        assert!(out.status.success(), "{out:?}");
    }
}

/// Waits (30 s at most) for a container to write `path` into a volume.
/// Waits for the container to have written `path` (made and written to:
/// a shell's `>` makes the file before it writes).
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        assert!(
            Instant::now() < deadline,
            "the container never wrote {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn volumes_are_bound_into_a_linux_container_read_only_unless_granted() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    let data = tempfile::tempdir().unwrap();
    apply(
        home.path(),
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  volumes:
  - {{name: data, hostPath: {{path: {}}}}}
  - {{name: settings, configMap: {{name: settings}}}}
  containers:
  - name: app
    image: busybox:1
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: settings, mountPath: /etc/app, readOnly: true}}
    command: [sh, -c, 'cat /etc/app/greeting > /data/out; touch /etc/app/new 2>/dev/null || echo refused > /data/ro; exec sleep 1000']
"#,
            data.path().display()
        ),
    );
    wait_for_file(&data.path().join("ro"));
    assert_eq!(
        std::fs::read_to_string(data.path().join("out")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("ro")).unwrap(),
        "refused\n"
    );
}

#[test]
fn host_network_shares_the_host_s_interfaces_but_not_its_cgroups() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    let data = tempfile::tempdir().unwrap();
    apply(
        home.path(),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hostnet}}
spec:
  hostNetwork: true
  volumes: [{{name: data, hostPath: {{path: {}}}}}]
  containers:
  - name: app
    image: busybox:1
    volumeMounts: [{{name: data, mountPath: /data}}]
    command: [sh, -c, 'ls /sys/fs/cgroup | wc -l > /data/cgroups; ip -o link | wc -l > /data/links; exec sleep 1000']
"#,
            data.path().display()
        ),
    );
    wait_for_file(&data.path().join("links"));
    std::thread::sleep(Duration::from_millis(100));
    let count = |f: &str| -> usize {
        std::fs::read_to_string(data.path().join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(count("links"), host_links, "the host's interfaces");
    assert_eq!(count("cgroups"), 0, "the host's cgroups are hidden");
}

#[test]
fn a_command_is_run_only_in_the_container_its_pids_name() {
    // A host process whose parent is not the init named: what a container's
    // pid could be once it ended and the number came round again.
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let init = berth_tests::berth_bin().with_file_name("berth-init");
    let out = std::process::Command::new(&init)
        .args(["exec", &stranger.id().to_string(), "1", "/bin/true"])
        .output()
        .unwrap();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not the container's"), "{err}");
}

#[test]
fn an_image_user_past_the_mapped_ids_runs_with_host_ids_and_says_so() {
    let home = home_with_busybox();
    let archive = busybox::archive(
        &[busybox::layer()],
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": "70000:70000"}),
        "far:1",
    );
    busybox::load_archive(home.path(), &archive);
    let out = berth(
        home.path(),
        &[
            "run",
            "far:1",
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map",
        ],
    );
    assert!(out.success, "{}", out.stderr);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words, ["70000", "0", "0", "4294967295"], "{}", out.stdout);
    assert!(
        out.stderr
            .contains("past the 65536 ids a user namespace maps"),
        "{}",
        out.stderr
    );
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_owned();
                    after.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[test]
fn a_container_dies_with_its_init_whatever_user_it_runs_as() {
    let home = home_with_busybox();
    let mut run = std::process::Command::new(berth_tests::berth_bin())
        .args(["run", "busybox:1", "--", "sleep", "300"])
        .env("BERTH_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // berth → its init → the container's sleep (root in a user namespace
    // of its own: its credentials changed on the way).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (init, container) = loop {
        let found = children_of(run.id()).into_iter().find_map(|init| {
            let container = *children_of(init).first()?;
            let comm = std::fs::read_to_string(format!("/proc/{container}/comm")).ok()?;
            (comm.trim() == "sleep").then_some((init, container))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no container started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The init killed outright, as it is when berth dies.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &init.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie its new parent has yet to reap.
    let running = || {
        std::fs::read_to_string(format!("/proc/{container}/stat")).is_ok_and(|s| {
            let state = s.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            state.is_some_and(|rest| !rest.starts_with('Z')) && s.contains("(sleep)")
        })
    };
    while running() {
        assert!(Instant::now() < deadline, "the container outlived its init");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = run.wait();
}

/// The environment that makes berth bind host-id volumes as on kernels
/// before 5.12, when `on`.
fn classic_mounts(on: bool) -> &'static [(&'static str, &'static str)] {
    if on {
        &[("BERTH_TEST_CLASSIC_MOUNTS", "1")]
    } else {
        &[]
    }
}

#[test]
fn a_volume_is_mounted_on_the_directory_checked_never_through_a_symlink() {
    let home = home_with_busybox();
    let outer = tempfile::tempdir().unwrap();
    let inner = tempfile::tempdir().unwrap();
    std::fs::write(inner.path().join("f"), "inner").unwrap();
    // The inner volume inside the outer one: its mount point is made there.
    let outer_dir = format!("{}:/data:rw", outer.path().display());
    let inner_dir = format!("{}:/data/sub/in", inner.path().display());
    // `classic`: host-id volumes bound as on kernels before 5.12.
    let run_as = |userns: &str, classic: bool, script: &str| {
        let dirs = ["--userns", userns, "--dir", &outer_dir, "--dir", &inner_dir];
        run_sh_env(home.path(), &dirs, classic_mounts(classic), script)
    };
    let run = |userns: &str, script: &str| run_as(userns, false, script);

    let (code, out, err) = run("private", "cat /data/sub/in/f");
    assert_eq!((code, out.as_str()), (0, "inner"), "{err}");
    // Made as the container's root, so owned by root on disk, as what it
    // writes in a volume is.
    let made = std::fs::metadata(outer.path().join("sub/in")).unwrap();
    assert!(made.is_dir());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 0);

    // With host ids the volumes are bound as the host sees them, and the
    // inner one is still read-only.
    for classic in [false, true] {
        let (code, out, err) = run_as(
            "host",
            classic,
            "touch /data/sub/in/x 2>/dev/null || echo refused; touch /data/y && cat /data/sub/in/f",
        );
        assert_eq!((code, out.as_str()), (0, "refused\ninner"), "{err}");
        assert!(outer.path().join("y").exists());
        std::fs::remove_file(outer.path().join("y")).unwrap();
    }

    // What a sibling container sharing the outer volume could plant: a
    // symlink out of the root where the inner one is to be mounted.
    std::fs::remove_dir_all(outer.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc", outer.path().join("sub")).unwrap();
    for (userns, classic) in [("private", false), ("host", false), ("host", true)] {
        let (code, _, err) = run_as(userns, classic, "true");
        assert_eq!(code, 125, "{err}");
        assert!(err.contains("/data/sub is a symlink"), "{err}");
    }
    assert!(!Path::new("/etc/in").exists());
}

#[test]
fn a_volume_never_gets_more_than_its_source_allows() {
    let home = home_with_busybox();
    let source = tempfile::tempdir().unwrap();
    let read_only = tempfile::tempdir().unwrap();
    let mount = |args: &[&str]| {
        let status = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "mount {args:?}");
    };
    // A read-only mount on the host, asked for as a writable volume.
    let at = read_only.path().to_str().unwrap();
    mount(&["--bind", source.path().to_str().unwrap(), at]);
    struct Unmount<'a>(&'a str);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .args(["-l", self.0])
                .status();
        }
    }
    let _unmount = Unmount(at);
    mount(&["-o", "remount,bind,ro", at]);

    let volume = format!("{at}:/data:rw");
    for (userns, classic) in [("private", false), ("host", false), ("host", true)] {
        let (_, out, err) = run_sh_env(
            home.path(),
            &["--userns", userns, "--dir", &volume],
            classic_mounts(classic),
            "touch /data/x 2>/dev/null && echo wrote || echo refused",
        );
        assert_eq!(out, "refused\n", "{userns} classic={classic}: {err}");
    }
    assert!(!source.path().join("x").exists());
}

/// The pod named `name`, as `get pods -o json` lists it.
fn pod_named(home: &Path, name: &str) -> Option<serde_json::Value> {
    berth_tests::kube::pods(home)
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
}

/// The log of `container` in pod `pod` once it has said `done` (30 s at
/// most): a container that prints what it found, then sleeps.
fn log_once_done(home: &Path, pod: &str, container: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = berth(home, &["logs", pod, "-c", container]);
        if out.success && out.stdout.lines().any(|l| l == "done") {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{pod}/{container} never said done: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_linux_container_runs_as_the_user_and_groups_its_security_context_names() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ids}
spec:
  securityContext: {runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: both
    image: busybox:1
    securityContext: {runAsUser: 1000}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    command: [sh, -c, 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"; stat -c "scratch=%g:%a" /scratch; touch /scratch/made && stat -c "made=%u:%g" /scratch/made; echo done; exec sleep 1000']
    # A command run in the container (an exec probe) is who its process is.
    readinessProbe: {exec: {command: [sh, -c, 'test "$(id -u):$(id -g)" = 1000:3000 && id -G | grep -qw 2000']}, periodSeconds: 1}
  - name: user
    image: busybox:1
    securityContext: {runAsUser: 65534}
    command: [sh, -c, 'echo "uid=$(id -u) gid=$(id -g)"; echo done; exec sleep 1000']
"#,
    );
    berth_tests::kube::wait_ready(home.path(), 1);
    let both = log_once_done(home.path(), "ids", "both");
    let first = both.lines().next().unwrap();
    assert!(first.starts_with("uid=1000 gid=3000 groups="), "{both}");
    let groups: Vec<&str> = first["uid=1000 gid=3000 groups=".len()..]
        .split_whitespace()
        .collect();
    for group in ["3000", "2000", "4000"] {
        assert!(groups.contains(&group), "{both}");
    }
    // The emptyDir is fsGroup's, group-writable, setgid: what is made in
    // it is the group's.
    assert!(both.contains("scratch=2000:2777"), "{both}");
    assert!(both.contains("made=1000:2000"), "{both}");
    // On disk too, with the ids the container gave it.
    let uid = pod_named(home.path(), "ids").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let scratch = home.path().join("pods").join(uid).join("volumes/scratch");
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&scratch).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (2000, 0o2777));
    assert_eq!(std::fs::metadata(scratch.join("made")).unwrap().uid(), 1000);

    // A container's own runAsUser, over the pod's runAsGroup.
    let user = log_once_done(home.path(), "ids", "user");
    assert!(user.starts_with("uid=65534 gid=3000\n"), "{user}");
}

#[test]
fn run_as_user_alone_takes_the_image_s_group_for_it_and_run_as_group_alone_keeps_its_user() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: split}
spec:
  containers:
  - name: user
    image: busybox:1
    securityContext: {runAsUser: 65534}
    command: [sh, -c, 'echo "uid=$(id -u) gid=$(id -g)"; echo done; exec sleep 1000']
  - name: unknown
    image: busybox:1
    securityContext: {runAsUser: 1234}
    command: [sh, -c, 'echo "uid=$(id -u) gid=$(id -g)"; echo done; exec sleep 1000']
  - name: group
    image: busybox:1
    securityContext: {runAsGroup: 3000}
    command: [sh, -c, 'echo "uid=$(id -u) gid=$(id -g)"; echo done; exec sleep 1000']
"#,
    );
    assert_eq!(
        log_once_done(home.path(), "split", "user"),
        "uid=65534 gid=65534\ndone\n"
    );
    // A uid the image does not know: group 0, as runc gives it.
    assert_eq!(
        log_once_done(home.path(), "split", "unknown"),
        "uid=1234 gid=0\ndone\n"
    );
    assert_eq!(
        log_once_done(home.path(), "split", "group"),
        "uid=0 gid=3000\ndone\n"
    );
}

#[test]
fn a_read_only_root_and_the_capabilities_named_are_the_container_s() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: readonly}
spec:
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: app
    image: busybox:1
    securityContext: {readOnlyRootFilesystem: true}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    command: [sh, -c, 'touch /x 2>&1 || echo root-refused; touch /tmp/x 2>/dev/null || echo tmp-refused; touch /scratch/y && echo scratch-ok; echo > /dev/shm/z && echo shm-ok; echo done; exec sleep 1000']
---
apiVersion: v1
kind: Pod
metadata: {name: capless}
spec:
  containers:
  - name: app
    image: busybox:1
    securityContext: {capabilities: {drop: [ALL]}}
    command: [sh, -c, 'grep -E "^Cap(Eff|Prm|Bnd):" /proc/self/status; ip link set lo mtu 1400 2>/dev/null || echo mtu-refused; echo done; exec sleep 1000']
---
apiVersion: v1
kind: Pod
metadata: {name: netadmin}
spec:
  containers:
  - name: app
    image: busybox:1
    securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}}
    command: [sh, -c, 'grep -E "^Cap(Eff|Prm|Bnd):" /proc/self/status; ip link set lo mtu 1400 && echo mtu-set; echo done; exec sleep 1000']
    # A command run in the container has its capabilities, no more.
    readinessProbe: {exec: {command: [grep, -q, "CapEff:\t0000000000001000", /proc/self/status]}, periodSeconds: 1}
"#,
    );
    // Only the root is read-only: the volume, /dev/shm keep their own flags.
    let readonly = log_once_done(home.path(), "readonly", "app");
    assert!(
        readonly.contains("touch: /x: Read-only file system"),
        "{readonly}"
    );
    for line in ["root-refused", "tmp-refused", "scratch-ok", "shm-ok"] {
        assert!(readonly.lines().any(|l| l == line), "{line}: {readonly}");
    }
    // drop ALL: nothing in effect, nothing to regain.
    let capless = log_once_done(home.path(), "capless", "app");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            capless.contains(&format!("{set}:\t0000000000000000")),
            "{capless}"
        );
    }
    assert!(capless.contains("mtu-refused"), "{capless}");
    // drop ALL, add NET_ADMIN: that bit (12) alone, and it works.
    let netadmin = log_once_done(home.path(), "netadmin", "app");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            netadmin.contains(&format!("{set}:\t0000000000001000")),
            "{netadmin}"
        );
    }
    assert!(netadmin.contains("mtu-set"), "{netadmin}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pod_named(home.path(), "netadmin").is_some_and(|p| berth_tests::kube::is_ready(&p)) {
        assert!(
            Instant::now() < deadline,
            "the exec probe never saw NET_ADMIN alone"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_as_non_root_refuses_a_container_that_would_run_as_root() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    let archive = busybox::archive(
        &[busybox::layer()],
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": "nobody"}),
        "named:1",
    );
    busybox::load_archive(home.path(), &archive);
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: rooted}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: app, image: "busybox:1", command: [sleep, "1000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: named}
spec:
  containers:
  - {name: app, image: "named:1", command: [sleep, "1000"], securityContext: {runAsNonRoot: true}}
---
apiVersion: v1
kind: Pod
metadata: {name: zero}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
  - {name: app, image: "busybox:1", command: [sleep, "1000"], securityContext: {runAsUser: 0}}
---
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000}
  containers: [{name: app, image: "busybox:1", command: [sleep, "1000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: far}
spec:
  hostUsers: false
  securityContext: {runAsUser: 70000}
  containers: [{name: app, image: "busybox:1", command: [sleep, "1000"]}]
"#,
    );
    // Kubernetes' words, with its name for the pod: name_namespace(uid).
    let refused = |name: &str, why: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pod = pod_named(home.path(), name).unwrap();
            let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            if waiting["reason"] == "CreateContainerConfigError" {
                let uid = pod["metadata"]["uid"].as_str().unwrap();
                assert_eq!(
                    waiting["message"],
                    format!("{why} (pod: \"{name}_default({uid})\", container: app)"),
                    "{pod:#}"
                );
                return;
            }
            assert!(Instant::now() < deadline, "{name} was not refused: {pod:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    refused(
        "rooted",
        "container has runAsNonRoot and image will run as root",
    );
    refused(
        "named",
        "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root",
    );
    refused("zero", "container's runAsUser breaks non-root policy");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pod_named(home.path(), "fine").is_some_and(|p| berth_tests::kube::is_ready(&p)) {
        assert!(Instant::now() < deadline, "a non-root pod did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ids a user namespace cannot map, with one required, say which.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = pod_named(home.path(), "far").unwrap();
        if pod["status"]["message"].as_str().is_some_and(|m| {
            m.contains(
                "hostUsers: false: runAsUser 70000 is past the 65536 ids a user namespace maps",
            )
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{pod:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing of the refused containers ever ran.
    for name in ["rooted", "named", "zero"] {
        let pod = pod_named(home.path(), name).unwrap();
        assert!(!berth_tests::kube::is_ready(&pod), "{pod:#}");
    }
}

#[test]
fn a_failed_container_s_message_is_the_end_of_its_log_when_asked() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: told}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: "busybox:1"
    command: [sh, -c, "echo first; echo the disk is full; exit 3"]
    terminationMessagePolicy: FallbackToLogsOnError
---
apiVersion: v1
kind: Pod
metadata: {name: silent}
spec:
  restartPolicy: Never
  containers: [{name: app, image: "busybox:1", command: [sh, -c, "echo quiet; exit 3"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - {name: quits, image: "busybox:1", command: [sh, -c, "sleep 1; exit 4"]}
  - {name: waits, image: "busybox:1", command: [sleep, "1000"]}
"#,
    );
    let failed = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pod = pod_named(home.path(), name).unwrap();
            if pod["status"]["phase"] == "Failed" {
                return pod["status"]["message"].as_str().unwrap_or("").to_owned();
            }
            assert!(Instant::now() < deadline, "{name}: {}", pod["status"]);
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(failed("told"), "first\nthe disk is full");
    let silent = failed("silent");
    assert!(silent.contains("exited with code 3"), "{silent}");
    assert!(!silent.contains("quiet"), "{silent}");
    // Each container's own end: the one that quit, and the one stopped
    // with the pod (SIGTERM, or SIGKILL past the grace), not made up.
    failed("pair");
    let pair = pod_named(home.path(), "pair").unwrap();
    let end = |name: &str| {
        pair["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["state"]["terminated"]["exitCode"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(end("quits"), 4, "{:#}", pair["status"]);
    assert!(matches!(end("waits"), 143 | 137), "{:#}", pair["status"]);
}

#[test]
fn config_and_secret_volumes_project_the_keys_asked_for_with_their_modes() {
    let home = tempfile::tempdir().unwrap();
    let (_daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, unused: nope}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: projected}
spec:
  volumes:
  - {name: cfg, configMap: {name: settings, defaultMode: 0400, items: [{key: greeting, path: sub/greeting.txt}]}}
  - {name: sec, secret: {secretName: creds, items: [{key: token, path: token, mode: 0600}]}}
  - {name: all, secret: {secretName: creds, defaultMode: 0440}}
  containers:
  - name: app
    image: "busybox:1"
    command: [sh, -c, "stat -c '%a %n' /cfg/sub/greeting.txt /sec/token /all/token; cat /cfg/sub/greeting.txt; echo; ls /cfg; grep -E ' /(sec|all|cfg) ' /proc/mounts | cut -d' ' -f2,3; echo done; sleep 1000"]
    volumeMounts: [{name: cfg, mountPath: /cfg}, {name: sec, mountPath: /sec}, {name: all, mountPath: /all}]
"#,
    );
    let log = log_once_done(home.path(), "projected", "app");
    assert!(log.contains("400 /cfg/sub/greeting.txt"), "{log}");
    assert!(log.contains("600 /sec/token"), "{log}");
    assert!(log.contains("440 /all/token"), "{log}");
    assert!(log.contains("hello"), "{log}");
    // Secrets live in memory, as the kubelet mounts them; ConfigMaps on disk.
    assert!(
        log.contains("/sec tmpfs") && log.contains("/all tmpfs"),
        "{log}"
    );
    assert!(!log.contains("/cfg tmpfs"), "{log}");
    // Only the keys asked for.
    assert!(!log.contains("unused"), "{log}");

    // A path that climbs out of its volume is refused at apply.
    let dir = tempfile::tempdir().unwrap();
    let file = berth_tests::kube::write(
        dir.path(),
        "escape.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: escape}\nspec:\n  volumes: [{name: cfg, configMap: {name: settings, items: [{key: greeting, path: ../x}]}}]\n  containers: [{name: app, image: \"busybox:1\"}]\n",
    );
    let refused = berth(home.path(), &["apply", "-f", &file]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("configMap.items[0].path"),
        "{}",
        refused.stderr
    );
}

fn succeeded(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Succeeded"
}

#[test]
fn a_claim_s_data_is_shared_by_wasm_and_linux_pods_and_outlives_them_and_the_daemon() {
    let home = tempfile::tempdir().unwrap();
    berth_tests::kube::build_image(home.path(), Path::new(berth_tests::guests::TOOL), "tool:1");
    let (daemon, _ingress) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: wasm-writes}
spec:
  restartPolicy: Never
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
  containers:
  - {name: w, image: "tool:1", args: [write, /data/note, from-wasm], volumeMounts: [{name: d, mountPath: /data}]}
"#,
    );
    berth_tests::kube::wait_for_named(home.path(), "wasm-writes", succeeded);
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: linux-reads}
spec:
  restartPolicy: Never
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
  containers:
  - name: r
    image: busybox:1
    command: [sh, -c, 'cat /data/note; echo; echo from-linux > /data/linux']
    volumeMounts: [{name: d, mountPath: /data}]
"#,
    );
    berth_tests::kube::wait_for_named(home.path(), "linux-reads", succeeded);
    let logs = berth(home.path(), &["logs", "linux-reads"]);
    assert_eq!(logs.stdout, "from-wasm\n", "{}", logs.stderr);
    let claim = berth(home.path(), &["get", "pvc", "data", "-o", "json"]);
    let claim: serde_json::Value = serde_json::from_str(&claim.stdout).unwrap();
    assert_eq!(claim["status"]["phase"], "Bound", "{claim:#}");
    let dir = home.path().join("volumes").join(format!(
        "{}_default_data",
        claim["spec"]["volumeName"].as_str().unwrap()
    ));
    assert!(dir.join("linux").is_file(), "{}", dir.display());

    // The pods and the daemon go; the data stays for the next pod.
    berth_tests::ok(berth(
        home.path(),
        &["delete", "pod", "wasm-writes", "linux-reads"],
    ));
    drop(daemon);
    let _daemon = berth_tests::BerthRun::start_command(home.path(), &["daemon"]);
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-reads}
spec:
  restartPolicy: Never
  volumes: [{name: d, persistentVolumeClaim: {claimName: data, readOnly: true}}]
  containers:
  - {name: r, image: "tool:1", args: [read, /data/linux], volumeMounts: [{name: d, mountPath: /data}]}
"#,
    );
    berth_tests::kube::wait_for_named(home.path(), "wasm-reads", succeeded);
    assert_eq!(
        berth(home.path(), &["logs", "wasm-reads"]).stdout,
        "from-linux\n"
    );

    // A ReadWriteOncePod claim: the second pod waits, and says why.
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: solo}
spec:
  accessModes: [ReadWriteOncePod]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: first}
spec:
  volumes: [{name: d, persistentVolumeClaim: {claimName: solo}}]
  containers:
  - {name: s, image: "tool:1", args: [sleep, "600000"], volumeMounts: [{name: d, mountPath: /data}]}
"#,
    );
    berth_tests::kube::wait_for_named(home.path(), "first", |p| p["spec"]["nodeName"].is_string());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: second}
spec:
  volumes: [{name: d, persistentVolumeClaim: {claimName: solo}}]
  containers:
  - {name: s, image: "tool:1", args: [sleep, "600000"], volumeMounts: [{name: d, mountPath: /data}]}
"#,
    );
    let second = berth_tests::kube::wait_for_named(home.path(), "second", |p| {
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    });
    assert!(
        second["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ReadWriteOncePod"),
        "{second:#}"
    );

    // Deleted while a pod uses it, the claim waits for the pod, and its
    // data stays meanwhile; then it goes, and its data with it
    // (local-path's policy is Delete).
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: holder}
spec:
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
  containers:
  - {name: s, image: "tool:1", args: [sleep, "600000"], volumeMounts: [{name: d, mountPath: /data}]}
"#,
    );
    berth_tests::kube::wait_for_named(home.path(), "holder", |p| p["status"]["phase"] == "Running");
    berth_tests::ok(berth(home.path(), &["delete", "pod", "wasm-reads"]));
    berth_tests::ok(berth(home.path(), &["delete", "pvc", "data"]));
    std::thread::sleep(Duration::from_millis(500));
    let held = berth(home.path(), &["get", "pvc", "data", "-o", "json"]);
    let held: serde_json::Value = serde_json::from_str(&held.stdout).unwrap();
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "{held:#}"
    );
    assert_eq!(
        held["metadata"]["finalizers"][0],
        "kubernetes.io/pvc-protection"
    );
    assert!(
        dir.join("linux").is_file(),
        "the data stays while the pod runs"
    );
    berth_tests::ok(berth(home.path(), &["delete", "pod", "holder"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_pod_of_wasm_and_linux_containers_shares_localhost() {
    let home = home_with_busybox();
    berth_tests::kube::build_image(
        home.path(),
        Path::new(berth_tests::guests::MISBEHAVE),
        "mb:1",
    );
    let _daemon = berth_tests::BerthRun::start_command(home.path(), &["daemon"]);
    apply(
        home.path(),
        r#"apiVersion: v1
kind: Pod
metadata: {name: mixed}
spec:
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'echo from-linux > /shared/note; httpd -p 8080 -h /www; until /bin/busybox wget -qO- http://127.0.0.1:9000/from-linux; do sleep 0.2; done; if [ -e /proc/net/if_inet6 ]; then /bin/busybox wget -qO- "http://[::1]:9000/v6"; else echo no-ipv6; fi; echo done; sleep 3600']
    ports: [{containerPort: 8080}]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: web
    image: mb:1
    imagePullPolicy: Never
    ports: [{containerPort: 9000}]
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes: [{name: shared, emptyDir: {}}]
"#,
    );
    // The Linux container's own loopback, in its namespace, is the wasm
    // container's declared port (refused until the wasm container runs, as
    // in any pod whose containers start in turn).
    let logs = log_once_done(home.path(), "mixed", "app");
    // And on [::1], where the kernel has IPv6.
    assert!(
        logs.contains("ok\nok\ndone\n") || logs.contains("ok\nno-ipv6\ndone\n"),
        "{logs}"
    );
    // And the wasm container reaches the Linux container's httpd on its
    // declared port, with no outbound grant.
    let pod = berth_tests::kube::wait_for_named(home.path(), "mixed", |p| {
        p["status"]["endpoints"]["web"].is_string()
    });
    let web = pod["status"]["endpoints"]["web"].as_str().unwrap();
    let web = format!("http://{}", web.trim_start_matches("http://"));
    let reply = berth_tests::get(&format!("{web}/fetch?url=http://localhost:8080/")).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            200,
            "fetched http://localhost:8080/: 200 OK: hello from busybox\n"
        )
    );
}

/// Files named `name` under `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

fn lines_of(home: &Path, pod: &str) -> Vec<u64> {
    berth_tests::ok(berth(home, &["logs", pod]))
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect()
}

#[test]
fn linux_containers_outlive_a_killed_daemon_and_are_adopted_with_their_logs_and_exits() {
    let home = tempfile::tempdir().unwrap();
    let (mut daemon, _) = daemon_with_images(home.path());
    apply(
        home.path(),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done; : ticker-marker']
---
apiVersion: v1
kind: Pod
metadata: {name: short}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox:1
    command: [sh, -c, 'sleep 3; echo done while away; exit 7; : short-marker']
---
apiVersion: v1
kind: Pod
metadata: {name: second}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: init
    image: busybox:1
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'echo ran >> /data/inits']
  containers:
  - name: app
    image: busybox:1
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'if [ -e /data/ran ]; then while true; do sleep 1; done; fi; touch /data/ran; exit 1; : second-marker']
"#,
    );
    berth_tests::kube::wait_for_named(home.path(), "short", |p| p["status"]["phase"] == "Running");
    berth_tests::kube::wait_for_named(home.path(), "ticker", |p| p["status"]["phase"] == "Running");
    let ticker = berth_tests::process_running("ticker-marker").expect("the ticker runs");
    // Its second run is the one adopted, not a third.
    berth_tests::kube::wait_for_named(home.path(), "second", |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && berth_tests::kube::is_ready(p)
    });
    let second = berth_tests::process_running("second-marker").expect("the second run runs");
    assert!(berth_tests::process_running("short-marker").is_some());
    daemon.kill();
    // No daemon for a while: the containers run on and their output is kept.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        berth_tests::process_running("ticker-marker"),
        Some(ticker),
        "the ticker died with the daemon"
    );
    assert!(
        berth_tests::process_running("short-marker").is_none(),
        "short should have ended by now"
    );

    let _daemon =
        berth_tests::BerthRun::start_command(home.path(), &["daemon", "--backoff-base", "200ms"]);
    // The short one ended while no daemon ran: its exit code is told.
    let short = berth_tests::kube::wait_for_named(home.path(), "short", |p| {
        p["status"]["phase"] == "Failed"
    });
    let terminated = &short["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 7, "{short:#}");
    let logs = berth_tests::ok(berth(home.path(), &["logs", "short"])).stdout;
    assert!(logs.contains("done while away"), "{logs}");
    // The ticker is adopted, not started again: same process, no restart,
    // and its log goes on without a gap.
    let ticker_pod = berth_tests::kube::wait_for_named(home.path(), "ticker", |p| {
        berth_tests::kube::is_ready(p)
    });
    assert_eq!(berth_tests::process_running("ticker-marker"), Some(ticker));
    let second_pod = berth_tests::kube::wait_for_named(home.path(), "second", |p| {
        berth_tests::kube::is_ready(p)
    });
    assert_eq!(berth_tests::process_running("second-marker"), Some(second));
    assert_eq!(
        second_pod["status"]["containerStatuses"][0]["restartCount"], 1,
        "{second_pod:#}"
    );
    // Its init container ran once: an adopted pod is not initialized again.
    let inits = files_named(home.path(), "inits");
    assert_eq!(inits.len(), 1, "{inits:?}");
    assert_eq!(std::fs::read_to_string(&inits[0]).unwrap(), "ran\n");
    assert_eq!(
        ticker_pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "{ticker_pod:#}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let ticks = lines_of(home.path(), "ticker");
    assert!(ticks.len() > 40, "{ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "the log has a gap: {ticks:?}"
    );
    // And it stops as any container does once its pod goes.
    berth_tests::ok(berth(home.path(), &["delete", "pod", "ticker"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while berth_tests::process_running("ticker-marker").is_some() {
        assert!(
            Instant::now() < deadline,
            "the adopted container outlived its pod"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
