//! `berth run` end to end: real guests served by the real binary.

use std::time::{Duration, Instant};

use berth_tests::{BerthRun, Upstream, get, guests, request};

#[tokio::test]
async fn hello_answers_and_serves_200_concurrent_requests() {
    let berth = BerthRun::start(guests::HELLO, &[]);
    let reply = get(&format!("{}/some/path", berth.url)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hello from /some/path\n");

    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = format!("{}/r{i}", berth.url);
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.body, format!("hello from /r{i}\n"));
    }
}

#[tokio::test]
async fn a_guest_built_for_wasi_0_2_0_runs_unchanged() {
    let bytes = std::fs::read(guests::LEGACY_HELLO).unwrap();
    let imports_0_2_0 = bytes.windows(21).any(|w| w == b"wasi:http/types@0.2.0");
    assert!(
        imports_0_2_0,
        "the legacy guest should import wasi:http/types@0.2.0"
    );

    let berth = BerthRun::start(guests::LEGACY_HELLO, &[]);
    let reply = get(&format!("{}/old?x=1", berth.url)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hello from /old?x=1 over wasi:http@0.2.0\n");
}

#[tokio::test]
async fn compiled_components_are_cached_under_berth_home() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache/compiled");
    // Compiled artifacts and their mtimes; wasmtime's usage `.stats` files
    // and cleanup markers change on every hit and are left out, and so is
    // a write still in progress (`.wip-atomic-write-…`) when berth stopped.
    let artifacts = |dir: &std::path::Path| {
        let mut found = berth_tests::files_under(dir);
        found.retain(|(path, _)| {
            let name = path.file_name().unwrap().to_string_lossy();
            !name.ends_with(".stats") && !name.starts_with('.') && !name.contains(".wip-")
        });
        found
    };

    let first = BerthRun::start_in(home.path(), guests::HELLO, &[]);
    assert_eq!(get(&format!("{}/", first.url)).await.status, 200);
    drop(first);
    let cached = artifacts(&cache);
    assert_eq!(
        cached.len(),
        1,
        "expected one artifact under {}",
        cache.display()
    );

    // A second start of the same component loads it instead of compiling.
    let second = BerthRun::start_in(home.path(), guests::HELLO, &[]);
    assert_eq!(get(&format!("{}/", second.url)).await.status, 200);
    assert_eq!(
        artifacts(&cache),
        cached,
        "the component was compiled again"
    );
}

#[tokio::test]
async fn every_request_gets_fresh_memory() {
    let berth = BerthRun::start(guests::MISBEHAVE, &[]);
    for i in 0..50 {
        let reply = get(&format!("{}/state", berth.url)).await;
        assert_eq!(reply.body, "clean\n", "sequential request {i}");
    }
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let url = format!("{}/state", berth.url);
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().body, "clean\n");
    }
}

#[tokio::test]
async fn echo_sees_only_the_env_it_was_given() {
    let berth = BerthRun::start(
        guests::ECHO,
        &["--env", "GREETING=hi there", "--env", "EMPTY="],
    );
    let reply = request("POST", &format!("{}/p?x=1", berth.url), "payload").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("method: POST\n"), "{}", reply.body);
    assert!(reply.body.contains("path: /p\n"), "{}", reply.body);
    assert!(reply.body.contains("body: payload\n"), "{}", reply.body);
    let env: Vec<&str> = reply
        .body
        .lines()
        .filter(|l| l.starts_with("env: "))
        .collect();
    assert_eq!(
        env,
        ["env: EMPTY=", "env: GREETING=hi there"],
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn echo_reads_granted_dirs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "granted content").unwrap();
    let grant = format!("{}:/data", dir.path().display());
    let berth = BerthRun::start(guests::ECHO, &["--dir", &grant]);

    let reply = get(&format!("{}/?read=/data/note.txt&list=/data", berth.url)).await;
    assert!(
        reply
            .body
            .contains("read /data/note.txt: ok: granted content"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("list /data: ok: note.txt"),
        "{}",
        reply.body
    );

    for path in [
        "/etc/passwd",
        "/data/../etc/passwd",
        "/data/../../etc/passwd",
        "/",
    ] {
        let reply = get(&format!("{}/?read={path}", berth.url)).await;
        assert!(
            reply.body.contains(&format!("read {path}: error")),
            "{path}: {}",
            reply.body
        );
        assert!(
            !reply.body.contains("root:"),
            "{path} leaked host content: {}",
            reply.body
        );
    }
    let reply = get(&format!("{}/?list=/data/..", berth.url)).await;
    assert!(
        reply.body.contains("list /data/..: error"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_granted_dir_is_the_one_opened_at_start_whatever_its_path_becomes() {
    let parent = tempfile::tempdir().unwrap();
    let granted = parent.path().join("data");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("note.txt"), "granted content").unwrap();
    let grant = format!("{}:/data", granted.display());
    let berth = BerthRun::start(guests::ECHO, &["--dir", &grant]);

    // The path now leads elsewhere: a symlink to a directory never granted.
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("note.txt"), "never granted").unwrap();
    std::fs::rename(&granted, parent.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(secret.path(), &granted).unwrap();

    let reply = get(&format!("{}/?read=/data/note.txt", berth.url)).await;
    assert!(
        reply
            .body
            .contains("read /data/note.txt: ok: granted content"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn read_only_dirs_refuse_writes_and_rw_dirs_accept_them() {
    let ro = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    let berth = BerthRun::start(
        guests::ECHO,
        &[
            "--dir",
            &format!("{}:/ro", ro.path().display()),
            "--dir",
            &format!("{}:/rw:rw", rw.path().display()),
        ],
    );

    let reply = request("POST", &format!("{}/?write=/ro/x.txt", berth.url), "nope").await;
    assert!(
        reply.body.contains("write /ro/x.txt: error"),
        "{}",
        reply.body
    );
    assert!(!ro.path().join("x.txt").exists());

    let reply = request(
        "POST",
        &format!("{}/?write=/rw/x.txt", berth.url),
        "written",
    )
    .await;
    assert!(reply.body.contains("write /rw/x.txt: ok"), "{}", reply.body);
    assert_eq!(
        std::fs::read_to_string(rw.path().join("x.txt")).unwrap(),
        "written"
    );
}

/// What the misbehave guest served by `berth` answers when asked to fetch
/// `http://HOST:PORT/` itself.
async fn fetch_through(berth: &BerthRun, host: &str, port: u16) -> berth_tests::Reply {
    get(&format!("{}/fetch?url=http://{host}:{port}/", berth.url)).await
}

#[tokio::test]
async fn outbound_http_reaches_allowed_hosts_only() {
    let allowed = Upstream::start().await;
    let denied = Upstream::start().await;
    let rule = format!("127.0.0.1:{}", allowed.port);
    let berth = BerthRun::start(guests::MISBEHAVE, &["--allow-outbound", &rule]);

    let reply = fetch_through(&berth, "127.0.0.1", allowed.port).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("200 OK: hello from upstream"),
        "{}",
        reply.body
    );
    assert_eq!(allowed.hits(), 1);

    let reply = fetch_through(&berth, "127.0.0.1", denied.port).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.body.contains("HttpRequestDenied"), "{}", reply.body);
    assert!(
        berth.wait_for_log("denied outbound request", Duration::from_secs(5)),
        "{}",
        berth.log()
    );
    assert_eq!(
        denied.connections(),
        0,
        "a denied request reached its server"
    );
}

#[tokio::test]
async fn the_wildcard_outbound_host_is_the_network_not_this_machine() {
    let upstream = Upstream::start().await;
    let berth = BerthRun::start(guests::MISBEHAVE, &["--allow-outbound", "*"]);
    // By address and by a name that resolves to loopback: this machine's
    // listeners (the ingress, node ports) are not "any host".
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"] {
        let reply = fetch_through(&berth, host, upstream.port).await;
        assert!(
            reply.body.contains("DestinationIpProhibited"),
            "{host}: {}",
            reply.body
        );
    }
    assert_eq!(upstream.connections(), 0);
    // Nor is the link: a cloud host's metadata service answers there. The
    // address is refused before any connection is tried.
    for host in ["169.254.169.254", "[fe80::1]"] {
        let reply = fetch_through(&berth, host, 80).await;
        assert!(
            reply.body.contains("DestinationIpProhibited"),
            "{host}: {}",
            reply.body
        );
    }
    assert!(
        berth.wait_for_log("`*` does not include this machine", Duration::from_secs(5)),
        "{}",
        berth.log()
    );
    // Named, it is allowed.
    let rule = format!("127.0.0.1:{}", upstream.port);
    let named = BerthRun::start(
        guests::MISBEHAVE,
        &["--allow-outbound", "*", "--allow-outbound", &rule],
    );
    let reply = fetch_through(&named, "127.0.0.1", upstream.port).await;
    assert!(
        reply.body.contains("200 OK: hello from upstream"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn no_outbound_is_allowed_by_default() {
    let upstream = Upstream::start().await;
    let berth = BerthRun::start(guests::MISBEHAVE, &[]);
    let reply = fetch_through(&berth, "127.0.0.1", upstream.port).await;
    assert!(reply.body.contains("HttpRequestDenied"), "{}", reply.body);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn guests_get_no_sockets_even_to_allowed_hosts() {
    let upstream = Upstream::start().await;
    let rule = format!("127.0.0.1:{}", upstream.port);
    let berth = BerthRun::start(guests::MISBEHAVE, &["--allow-outbound", &rule]);
    let reply = get(&format!(
        "{}/connect?addr=127.0.0.1:{}",
        berth.url, upstream.port
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains(": error:"), "{}", reply.body);
    assert!(!reply.body.contains("connected"), "{}", reply.body);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn misbehaving_guests_get_500_and_the_host_keeps_serving() {
    let berth = BerthRun::start(guests::MISBEHAVE, &["--memory", "64Mi", "--timeout", "1s"]);
    let cases = [
        (
            "/trap",
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        ("/loop", "used more than its CPU time limit of 1s"),
        ("/alloc?mb=512", "exceeded its memory limit of 64Mi"),
        ("/stack", "call stack exhausted"),
    ];
    for (path, reason) in cases {
        let start = Instant::now();
        let reply = get(&format!("{}{path}", berth.url)).await;
        assert_eq!(reply.status, 500, "{path}: {}", reply.body);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{path} took {:?}",
            start.elapsed()
        );
        // The client learns nothing of the guest's internals; the log does.
        assert!(
            !reply.body.contains("wasm"),
            "{path} leaked internals: {}",
            reply.body
        );
        assert!(
            berth.wait_for_log(reason, Duration::from_secs(5)),
            "{path}: no {reason:?} in\n{}",
            berth.log()
        );

        let reply = get(&format!("{}/", berth.url)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok\n"),
            "after {path}"
        );
    }
    // Within the limits, the same guest does the same work fine.
    let reply = get(&format!("{}/alloc?mb=16", berth.url)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "allocated 16 MiB\n")
    );
}

#[tokio::test]
async fn a_looping_guest_does_not_starve_other_requests() {
    let berth = BerthRun::start(guests::MISBEHAVE, &["--timeout", "3s"]);
    let url = berth.url.clone();
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{url}/loop");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Four spinning guests on a two-core box, yet a quick request still answers
    // long before they time out: guests yield at every epoch tick.
    let start = Instant::now();
    let reply = get(&format!("{}/", berth.url)).await;
    assert_eq!(reply.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    for l in loops {
        assert_eq!(l.await.unwrap().status, 500);
    }
    assert!(
        berth.wait_for_log(
            "used more than its CPU time limit of 3s",
            Duration::from_secs(5)
        ),
        "{}",
        berth.log()
    );
}

/// Cores a `berth run misbehave.wasm ARGS` uses while three requests spin
/// (more than the machine's two cores: some wait their turn).
async fn cores_used_by_spinning_guests(args: &[&str]) -> f64 {
    let mut all = vec!["--timeout", "60s"];
    all.extend_from_slice(args);
    let berth = BerthRun::start(guests::MISBEHAVE, &all);
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{}/loop", berth.url);
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu, wall) = (berth.cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = (berth.cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
    for l in loops {
        l.abort();
    }
    used
}

#[tokio::test]
async fn a_cpu_share_holds_all_of_a_workloads_requests_to_it() {
    // Guests spinning at once, on a two-core machine: unlimited, they take
    // what cores they get; with --cpus 250m, a quarter of one between them
    // (paused, not failed).
    let limited = cores_used_by_spinning_guests(&["--cpus", "250m"]).await;
    let free = cores_used_by_spinning_guests(&[]).await;
    assert!(
        limited < 0.45,
        "with --cpus 250m berth used {limited:.2} cores"
    );
    assert!(
        free > 2.0 * limited,
        "unlimited {free:.2} cores, limited {limited:.2}: the limit did not bite"
    );
}

#[tokio::test]
async fn guest_output_goes_to_the_log_tagged_never_to_stdout() {
    let berth = BerthRun::start(guests::MISBEHAVE, &[]);
    assert_eq!(get(&format!("{}/trap", berth.url)).await.status, 500);
    assert!(
        berth.wait_for_log("guest asked to trap", Duration::from_secs(5)),
        "{}",
        berth.log()
    );
    let line = berth
        .log()
        .lines()
        .find(|l| l.contains("guest asked to trap"))
        .unwrap()
        .to_owned();
    assert!(line.contains("berth::guest"), "{line}");
    assert!(line.contains("workload=\"misbehave\""), "{line}");
    assert!(line.contains("stream=\"stderr\""), "{line}");
    assert_eq!(berth.stdout(), "", "guest output reached berth's stdout");
}

#[tokio::test]
async fn waiting_is_not_charged_as_cpu_time() {
    let berth = BerthRun::start(guests::MISBEHAVE, &["--timeout", "500ms"]);
    // 150 naps of 10 ms: 1.5 s of wall time, three times the CPU limit, but
    // almost all of it spent waiting in the host.
    let reply = get(&format!("{}/naps?n=150&ms=10", berth.url)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "napped 150 times\n"),
        "{}",
        berth.log()
    );
}

#[tokio::test]
async fn shutdown_does_not_hang_on_a_spinning_guest() {
    let mut berth = BerthRun::start(
        guests::MISBEHAVE,
        &["--timeout", "60s", "--drain-timeout", "1s"],
    );
    let url = format!("{}/loop", berth.url);
    let spinning = tokio::spawn(async move {
        let _ = berth_tests::client().get(url.parse().unwrap()).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    berth.terminate();
    let status = berth.wait(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "berth still running 10 s after SIGTERM with a 1 s drain timeout"
    );
    spinning.abort();
}

#[tokio::test]
async fn http_1_0_requests_without_host_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let berth = BerthRun::start(guests::HELLO, &[]);
    let addr = berth.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /old HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with("hello from /old\n"), "{response}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut berth = BerthRun::start(guests::MISBEHAVE, &[]);
    let url = format!("{}/sleep?ms=1500", berth.url);
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    berth.terminate();

    let reply = slow.await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "slept 1500 ms\n")
    );
    let status = berth
        .wait(Duration::from_secs(10))
        .expect("berth exits after draining");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_wait_then_get_503() {
    let berth = BerthRun::start(guests::MISBEHAVE, &["--max-concurrency", "1"]);
    let url = format!("{}/sleep?ms=4000", berth.url);
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The slot stays taken past the 2 s queue timeout.
    let second = get(&url).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert_eq!(first.await.unwrap().status, 200);
    // Once free, the slot serves again.
    assert_eq!(get(&format!("{}/", berth.url)).await.status, 200);
}

#[tokio::test]
async fn a_guest_that_waits_too_long_gets_504_and_frees_its_slot() {
    let berth = BerthRun::start(
        guests::MISBEHAVE,
        &["--response-timeout", "300ms", "--max-concurrency", "1"],
    );
    let started = Instant::now();
    let slow = get(&format!("{}/sleep?ms=5000", berth.url)).await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(berth.wait_for_log("did not start its response within", Duration::from_secs(2)));
    // The one slot is free again at once.
    assert_eq!(get(&format!("{}/", berth.url)).await.status, 200);
}

#[test]
fn a_granted_directory_that_does_not_exist_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("{}:/data", dir.path().join("missing").display());
    let out = berth_tests::berth(
        &berth_tests::shared_home(),
        &[
            "run",
            guests::HELLO,
            "--listen",
            "127.0.0.1:0",
            "--dir",
            &missing,
        ],
    );
    assert!(!out.success);
    assert!(out.stdout.is_empty(), "it started serving");
    assert!(out.stderr.contains("granting directory"), "{}", out.stderr);
    assert!(
        out.stderr.contains(missing.trim_end_matches(":/data")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_memory_limit_below_the_components_own_memory_fails_at_start() {
    let out = berth_tests::berth(
        &berth_tests::shared_home(),
        &[
            "run",
            guests::HELLO,
            "--listen",
            "127.0.0.1:0",
            "--memory",
            "64Ki",
        ],
    );
    assert!(!out.success);
    assert!(out.stdout.is_empty(), "it started serving");
    assert!(out.stderr.contains("instantiating"), "{}", out.stderr);
    assert!(
        out.stderr.contains("exceeded its memory limit of 64Ki"),
        "{}",
        out.stderr
    );
}

/// `berth run TOOL.wasm -- ARGS` in a home of its own, with `stdin`.
fn run_tool(args: &[&str], stdin: &str) -> berth_tests::Finished {
    let home = tempfile::tempdir().unwrap();
    berth_tests::berth_input(home.path(), args, &[], stdin)
}

#[test]
fn a_command_runs_to_completion_with_its_arguments_env_and_stdin() {
    let out = run_tool(&["run", guests::TOOL, "--", "args", "a", "b c"], "");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "tool.wasm args a b c\n");
    // Only the environment it is given.
    let out = run_tool(
        &[
            "run",
            "-e",
            "GREETING=hi",
            guests::TOOL,
            "--",
            "env",
            "GREETING",
            "HOME",
        ],
        "",
    );
    assert_eq!(out.stdout, "GREETING=hi\nHOME=\n");
    // Standard input only with -i, as docker run.
    let read = run_tool(&["run", "-i", guests::TOOL, "--", "upper"], "quiet words\n");
    assert_eq!(read.stdout, "QUIET WORDS\n");
    let unread = run_tool(&["run", guests::TOOL, "--", "upper"], "quiet words\n");
    assert_eq!(unread.stdout, "");
    // Its exit status is berth's: WASI 0.2's exit says failure as 1.
    let failed = run_tool(&["run", guests::TOOL, "--", "exit", "7"], "");
    assert_eq!(failed.code, Some(1));
    assert!(
        failed.stderr.contains("leaving with 7"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        run_tool(&["run", guests::TOOL, "--", "exit", "0"], "").code,
        Some(0)
    );
}

#[test]
fn a_command_gets_only_the_directories_granted_and_stays_in_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let rw = format!("{}:/data:rw", dir.path().display());
    let ro = format!("{}:/data", dir.path().display());
    let wrote = run_tool(
        &[
            "run",
            "--dir",
            &rw,
            guests::TOOL,
            "--",
            "write",
            "/data/note",
            "kept",
        ],
        "",
    );
    assert_eq!(wrote.code, Some(0), "{}", wrote.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("note")).unwrap(),
        "kept"
    );
    let refused = run_tool(
        &[
            "run",
            "--dir",
            &ro,
            guests::TOOL,
            "--",
            "write",
            "/data/other",
            "x",
        ],
        "",
    );
    assert_eq!(refused.code, Some(1));
    assert!(!dir.path().join("other").exists());
    let read = run_tool(
        &[
            "run",
            "--dir",
            &ro,
            guests::TOOL,
            "--",
            "read",
            "/data/note",
        ],
        "",
    );
    assert_eq!(read.stdout, "kept");
    // Nothing of the host but what was granted.
    let host = run_tool(&["run", guests::TOOL, "--", "read", "/etc/passwd"], "");
    assert_eq!(host.code, Some(1));

    // --timeout is the whole run's CPU time; a spinning guest is stopped
    // and the limit named.
    let started = Instant::now();
    let spun = run_tool(
        &["run", "--timeout", "300ms", guests::TOOL, "--", "spin"],
        "",
    );
    assert_eq!(spun.code, Some(134));
    assert!(
        spun.stderr.contains("CPU time limit of 300ms"),
        "{}",
        spun.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let big = run_tool(
        &["run", "--memory", "16Mi", guests::TOOL, "--", "alloc", "64"],
        "",
    );
    assert_eq!(big.code, Some(134));
    assert!(
        big.stderr.contains("memory limit of 16Mi"),
        "{}",
        big.stderr
    );
    let fits = run_tool(
        &["run", "--memory", "16Mi", guests::TOOL, "--", "alloc", "4"],
        "",
    );
    assert_eq!(fits.stdout, "kept 4 MiB\n", "{}", fits.stderr);
    let panicked = run_tool(&["run", guests::TOOL, "--", "panic"], "");
    assert_eq!(panicked.code, Some(134));
    assert!(panicked.stderr.contains("as asked"), "{}", panicked.stderr);
}

#[tokio::test]
async fn arguments_to_a_component_of_both_worlds_run_it_beside_serving_it() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let rw = format!("{}:/data:rw", data.path().display());
    let mut run = BerthRun::start_in(
        home.path(),
        guests::WORKER,
        &["--dir", &rw, "--", "40", "50", "3"],
    );
    // Served while its `run` ticks: the handler reads what `run` wrote.
    // (A read may meet the file as `run` rewrites it, empty.)
    let tick = |body: &str| -> Option<u32> { body.trim().strip_prefix("ticks: ")?.parse().ok() };
    let first = berth_tests::get_until(&run.url, |b| tick(b).is_some()).await;
    let later = berth_tests::get_until(&run.url, |b| tick(b) > tick(&first)).await;
    assert!(tick(&later) > tick(&first), "{first:?} then {later:?}");
    // Its run is the process's life: berth ends with it, its code berth's
    // (WASI 0.2's exit says failure as 1).
    let status = run
        .wait(Duration::from_secs(20))
        .expect("berth ended with the run");
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert_eq!(
        std::fs::read_to_string(data.path().join("ticks")).unwrap(),
        "40"
    );
    let out = run.stdout();
    assert!(out.starts_with("worker started\ntick 1\n"), "{out}");

    // Ended by a signal before its `run` ends: a shell's child's status.
    let mut stopped = BerthRun::start_in(
        home.path(),
        guests::WORKER,
        &["--dir", &rw, "--", "100000", "50", "0"],
    );
    stopped.terminate();
    let status = stopped.wait(Duration::from_secs(20)).expect("berth ended");
    assert_eq!(status.code(), Some(130), "{}", stopped.log());

    // Without arguments it is only served: its `run` is never called.
    let served = BerthRun::start_in(home.path(), guests::WORKER, &["--dir", &rw]);
    std::fs::remove_file(data.path().join("ticks")).unwrap();
    assert_eq!(get(&served.url).await.body, "ticks: none\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&served.url).await.body, "ticks: none\n");
    assert_eq!(served.stdout(), "");
}

#[test]
fn arguments_to_an_http_component_are_refused_or_run_the_run_it_exports() {
    // Only a handler: arguments for it are a mistake, named.
    let out = run_tool(&["run", guests::LEGACY_HELLO, "--", "x"], "");
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("is an HTTP component: it is served, and takes no arguments"),
        "{}",
        out.stderr
    );
    // wstd's servers export a `run` that is not meant to run: asked to,
    // it traps saying so, and berth ends with the trap's status.
    let out = run_tool(&["run", guests::HELLO, "--", "x"], "");
    assert_eq!(out.code, Some(134), "{}", out.stderr);
    assert!(
        out.stderr.contains("should be run with `handle`"),
        "{}",
        out.stderr
    );
}
