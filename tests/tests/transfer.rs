//! `berth push`, `berth pull` and `berth login` against real registries:
//! the CNCF distribution registry and berth's own.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_tests::{
    BerthRun, DockerRegistry, berth, berth_bin, berth_input as berth_with, free_port, get, guests,
    ok, wait_for_port,
};

/// An app image: the echo guest and a static bundle.
fn build_app(home: &Path, tag: &str) -> String {
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(guests::ECHO, app.path().join("echo.wasm")).unwrap();
    std::fs::create_dir(app.path().join("static")).unwrap();
    std::fs::write(app.path().join("static/page.txt"), "pulled page").unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        "component = \"echo.wasm\"\n[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    )
    .unwrap();
    let out = berth(home, &["build", app.path().to_str().unwrap(), "-t", tag]);
    assert!(out.success, "{}", out.stderr);
    out.stdout.split_whitespace().last().unwrap().to_owned()
}

fn berth_registry(root: &Path, listen: &str, extra: &[&str]) -> BerthRun {
    let mut args = vec![
        "registry",
        "serve",
        "--listen",
        listen,
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    BerthRun::start_command(root.parent().unwrap(), &args)
}

#[tokio::test]
async fn an_image_pushed_to_docker_registry_pulls_into_a_fresh_store_and_runs() {
    let registry = DockerRegistry::start();
    let home = tempfile::tempdir().unwrap();
    let digest = build_app(home.path(), "app:1");
    let remote = format!("{}/team/app:1", registry.host);
    ok(berth(home.path(), &["tag", "app:1", &remote]));
    let pushed = ok(berth(home.path(), &["push", &remote]));
    assert_eq!(pushed.stdout.trim(), format!("{remote} {digest}"));
    assert_eq!(
        pushed.stderr.matches(" pushed (").count(),
        3,
        "{}",
        pushed.stderr
    );

    // Pushing again moves nothing: the registry has every blob.
    let again = ok(berth(home.path(), &["push", &remote]));
    assert_eq!(
        again.stderr.matches("already there").count(),
        3,
        "{}",
        again.stderr
    );

    let fresh = tempfile::tempdir().unwrap();
    let pulled = ok(berth(fresh.path(), &["pull", &remote]));
    assert_eq!(pulled.stdout.trim(), format!("{remote} {digest}"));
    let run = BerthRun::start_in(fresh.path(), &remote, &[]);
    let reply = get(&format!("{}/?read=/static/page.txt", run.url)).await;
    assert!(reply.body.contains("ok: pulled page"), "{}", reply.body);

    // By digest too; a wrong one is refused.
    let by_digest = format!("{}/team/app@{digest}", registry.host);
    ok(berth(
        tempfile::tempdir().unwrap().path(),
        &["pull", &by_digest],
    ));
    let missing = berth(
        fresh.path(),
        &["pull", &format!("{}/team/app:nope", registry.host)],
    );
    assert!(!missing.success);
    assert!(
        missing.stderr.contains("MANIFEST_UNKNOWN"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn pushing_to_a_second_repository_mounts_the_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry(&dir.path().join("registry"), "127.0.0.1:0", &[]);
    let host = registry.url.trim_start_matches("http://").to_owned();
    let home = tempfile::tempdir().unwrap();
    let digest = build_app(home.path(), "app:1");
    for repo in ["team/app", "other/app"] {
        ok(berth(
            home.path(),
            &["tag", "app:1", &format!("{host}/{repo}:1")],
        ));
    }
    ok(berth(home.path(), &["push", &format!("{host}/team/app:1")]));
    let mounted = ok(berth(
        home.path(),
        &["push", &format!("{host}/other/app:1")],
    ));
    assert_eq!(
        mounted.stderr.matches("mounted from team/app").count(),
        3,
        "{}",
        mounted.stderr
    );
    let fresh = tempfile::tempdir().unwrap();
    let pulled = ok(berth(
        fresh.path(),
        &["pull", &format!("{host}/other/app:1")],
    ));
    assert!(
        pulled.stdout.ends_with(&format!("{digest}\n")),
        "{}",
        pulled.stdout
    );
}

#[tokio::test]
async fn login_stores_credentials_the_registry_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let mut file = std::fs::File::create(&htpasswd).unwrap();
    for (user, password) in [("alice", "wonderland"), ("bob", "builder")] {
        writeln!(file, "{user}:{}", bcrypt::hash(password, 4).unwrap()).unwrap();
    }
    let registry = berth_registry(
        &dir.path().join("registry"),
        "127.0.0.1:0",
        &["--auth", htpasswd.to_str().unwrap(), "--pull-only", "bob"],
    );
    let host = registry.url.trim_start_matches("http://").to_owned();
    let home = tempfile::tempdir().unwrap();
    build_app(home.path(), "app:1");
    let remote = format!("{host}/team/app:1");
    ok(berth(home.path(), &["tag", "app:1", &remote]));

    let anonymous = berth(home.path(), &["push", &remote]);
    assert!(!anonymous.success);
    assert!(
        anonymous.stderr.contains("berth login"),
        "{}",
        anonymous.stderr
    );

    let login = |user: &str, password: &str| {
        berth_with(
            home.path(),
            &["login", &host, "-u", user, "--password-stdin"],
            &[],
            &format!("{password}\n"),
        )
    };
    let wrong = login("alice", "looking-glass");
    assert!(!wrong.success);
    assert!(
        wrong.stderr.contains("refused the credentials"),
        "{}",
        wrong.stderr
    );
    assert!(
        !home.path().join("auth.json").exists(),
        "bad credentials are not stored"
    );

    ok(login("alice", "wonderland"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(home.path().join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(berth(home.path(), &["push", &remote]));

    // bob may pull but not push.
    let bob_home = tempfile::tempdir().unwrap();
    let bob = berth_with(
        bob_home.path(),
        &["login", &host, "-u", "bob"],
        &[("BERTH_PASSWORD", "builder")],
        "",
    );
    assert!(bob.success, "{}", bob.stderr);
    ok(berth(bob_home.path(), &["pull", &remote]));
    ok(berth(
        bob_home.path(),
        &["tag", &remote, &format!("{host}/bob/app:1")],
    ));
    let denied = berth(bob_home.path(), &["push", &format!("{host}/bob/app:1")]);
    assert!(!denied.success);
    assert!(denied.stderr.contains("DENIED"), "{}", denied.stderr);
}

/// A TCP proxy that forwards to `upstream` until `limit` bytes have gone
/// upstream, then drops every connection and refuses new ones.
async fn cutting_proxy(
    listen: &str,
    upstream: String,
    limit: u64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flag = cut.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            let upstream = upstream.clone();
            let (flag, sent) = (flag.clone(), sent.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = cr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || flag.load(Ordering::SeqCst) {
                            break;
                        }
                        if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                            flag.store(true, Ordering::SeqCst);
                            break;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (cut, task)
}

#[tokio::test]
async fn an_interrupted_chunked_push_resumes_where_the_registry_got_to() {
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry(&dir.path().join("registry"), "127.0.0.1:0", &[]);
    let upstream = registry.url.trim_start_matches("http://").to_owned();

    // An image with a 12 MiB layer of incompressible bytes.
    let home = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(guests::HELLO, app.path().join("hello.wasm")).unwrap();
    std::fs::create_dir(app.path().join("data")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..12 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(app.path().join("data/noise.bin"), &noise).unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        "component = \"hello.wasm\"\n[[files]]\nsource = \"data\"\nmount = \"/data\"\n",
    )
    .unwrap();
    let out = ok(berth(
        home.path(),
        &["build", app.path().to_str().unwrap(), "-t", "big:1"],
    ));
    let digest = out.stdout.split_whitespace().last().unwrap().to_owned();

    // Through a proxy that cuts the connection after about 5 MiB.
    let proxy = format!("127.0.0.1:{}", free_port());
    let remote = format!("{proxy}/team/big:1");
    ok(berth(home.path(), &["tag", "big:1", &remote]));
    let (cut, first_proxy) = cutting_proxy(&proxy, upstream.clone(), 5 << 20).await;
    let home_path = home.path().to_owned();
    let remote_arg = remote.clone();
    let first = tokio::task::spawn_blocking(move || {
        berth(&home_path, &["push", "--chunk-size", "1Mi", &remote_arg])
    })
    .await
    .unwrap();
    assert!(!first.success, "the cut push fails: {}", first.stderr);
    assert!(cut.load(Ordering::SeqCst));
    first_proxy.abort();
    let _ = first_proxy.await;

    // The same address, forwarding everything now: the push resumes.
    let _proxy = cutting_proxy(&proxy, upstream, u64::MAX).await;
    assert!(wait_for_port(&proxy, Duration::from_secs(5)));
    let home_path = home.path().to_owned();
    let second = tokio::task::spawn_blocking(move || {
        berth(&home_path, &["push", "--chunk-size", "1Mi", &remote])
    })
    .await
    .unwrap();
    assert!(second.success, "{}", second.stderr);
    assert!(second.stderr.contains("resuming"), "{}", second.stderr);

    let fresh = tempfile::tempdir().unwrap();
    let pulled = ok(berth(
        fresh.path(),
        &[
            "pull",
            &format!("{}/team/big:1", registry.url.trim_start_matches("http://")),
        ],
    ));
    assert!(
        pulled.stdout.ends_with(&format!("{digest}\n")),
        "{}",
        pulled.stdout
    );
}

#[tokio::test]
async fn a_multi_platform_index_pulls_its_wasm_manifest_and_pushes_whole() {
    use berth_tests::send;
    use sha2::Digest as _;
    let digest_of = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry(&dir.path().join("registry"), "127.0.0.1:0", &[]);
    let url = registry.url.clone();
    let host = url.trim_start_matches("http://").to_owned();

    // The wasm image, pushed by berth; a linux/amd64 one beside it.
    let home = tempfile::tempdir().unwrap();
    let wasm_digest = build_app(home.path(), "app:1");
    ok(berth(
        home.path(),
        &["tag", "app:1", &format!("{host}/multi:wasm")],
    ));
    ok(berth(home.path(), &["push", &format!("{host}/multi:wasm")]));
    let config =
        br#"{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let upload = |bytes: Vec<u8>| {
        let url = url.clone();
        async move {
            let digest = digest_of(&bytes);
            let reply = send(
                "POST",
                &format!("{url}/v2/multi/blobs/uploads/?digest={digest}"),
                &[],
                bytes,
            )
            .await;
            assert_eq!(reply.status, 201);
            digest
        }
    };
    let config_digest = upload(config.to_vec()).await;
    let linux = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    let linux_digest = digest_of(&linux);
    let put = |reference: String, bytes: Vec<u8>, media: &'static str| {
        let url = url.clone();
        async move {
            let reply = send(
                "PUT",
                &format!("{url}/v2/multi/manifests/{reference}"),
                &[("content-type", media)],
                bytes,
            )
            .await;
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
    };
    put(
        linux_digest.clone(),
        linux.clone(),
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await;
    let wasm_size = send(
        "HEAD",
        &format!("{url}/v2/multi/manifests/wasm"),
        &[],
        vec![],
    )
    .await
    .header("content-length")
    .to_owned();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": linux_digest,
             "size": linux.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": wasm_digest,
             "size": wasm_size.parse::<u64>().unwrap(), "platform": {"os": "wasip2", "architecture": "wasm"}},
        ],
    }))
    .unwrap();
    put(
        "1".into(),
        index.clone(),
        "application/vnd.oci.image.index.v1+json",
    )
    .await;

    // berth pull takes the wasm manifest, which runs.
    let fresh = tempfile::tempdir().unwrap();
    let remote = format!("{host}/multi:1");
    let pulled = ok(berth(fresh.path(), &["pull", &remote]));
    assert_eq!(pulled.stdout.trim(), format!("{remote} {wasm_digest}"));
    assert!(
        pulled.stderr.contains("pulling wasip2/wasm"),
        "{}",
        pulled.stderr
    );
    let run = BerthRun::start_in(fresh.path(), &remote, &[]);
    assert_eq!(get(&format!("{}/", run.url)).await.status, 200);

    // The whole index, copied into a store by skopeo, pushes whole.
    let store = fresh.path().join("store");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:{host}/copy:1", store.display()),
        ])
        .output()
        .expect("skopeo is required for this test (Debian package `skopeo`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(berth(fresh.path(), &["push", &format!("{host}/copy:1")]));
    let copied = send("GET", &format!("{url}/v2/copy/manifests/1"), &[], vec![]).await;
    assert_eq!(copied.status, 200);
    assert_eq!(copied.body, index, "the index arrives byte for byte");
    let child = send(
        "HEAD",
        &format!("{url}/v2/copy/manifests/{linux_digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(child.status, 200);
}

#[tokio::test]
async fn parallel_pushes_from_one_home_do_not_share_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry(&dir.path().join("registry"), "127.0.0.1:0", &[]);
    let host = registry.url.trim_start_matches("http://").to_owned();
    let home = tempfile::tempdir().unwrap();
    let digest = build_app(home.path(), "app:1");
    let remote = format!("{host}/team/app:1");
    ok(berth(home.path(), &["tag", "app:1", &remote]));
    // Four at once, in small chunks so their uploads overlap: each pushes
    // whole (or finds the blob pushed), none writes into another's upload.
    let pushes: Vec<std::process::Child> = (0..4)
        .map(|_| {
            Command::new(berth_bin())
                .args(["push", &remote, "--chunk-size", "16384"])
                .env("BERTH_HOME", home.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for push in pushes {
        let out = push.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fresh = tempfile::tempdir().unwrap();
    let pulled = ok(berth(fresh.path(), &["pull", &remote]));
    assert!(
        pulled.stdout.ends_with(&format!("{digest}\n")),
        "{}",
        pulled.stdout
    );
}

#[tokio::test]
async fn a_pod_pulls_from_a_private_registry_with_its_image_pull_secret() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let mut file = std::fs::File::create(&htpasswd).unwrap();
    writeln!(file, "alice:{}", bcrypt::hash("wonderland", 4).unwrap()).unwrap();
    let registry = berth_registry(
        &dir.path().join("registry"),
        "127.0.0.1:0",
        &["--auth", htpasswd.to_str().unwrap()],
    );
    let host = registry.url.trim_start_matches("http://").to_owned();
    let pusher = tempfile::tempdir().unwrap();
    build_app(pusher.path(), "app:1");
    let remote = format!("{host}/team/app:1");
    ok(berth(pusher.path(), &["tag", "app:1", &remote]));
    let login = berth_with(
        pusher.path(),
        &["login", &host, "-u", "alice", "--password-stdin"],
        &[],
        "wonderland\n",
    );
    assert!(login.success, "{}", login.stderr);
    ok(berth(pusher.path(), &["push", &remote]));

    // A daemon that has never logged in: only the pod's secret lets it pull.
    let home = tempfile::tempdir().unwrap();
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    use base64::Engine as _;
    let config =
        serde_json::json!({"auths": {&host: {"username": "alice", "password": "wonderland"}}});
    let encoded = base64::engine::general_purpose::STANDARD.encode(config.to_string());
    let pod = |name: &str, secret: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  imagePullSecrets: [{{name: {secret}}}]\n  containers: [{{name: app, image: \"{remote}\"}}]\n"
        )
    };
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\ndata: {{.dockerconfigjson: {encoded}}}\n---\n{}---\n{}",
        pod("with", "regcred"),
        pod("without", "missing")
    );
    let path = home.path().join("pods.yaml");
    std::fs::write(&path, manifest).unwrap();
    ok(berth(home.path(), &["apply", "-f", path.to_str().unwrap()]));

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = berth_tests::kube::pods(home.path());
        let status = |name: &str| {
            pods.iter()
                .find(|p| p["metadata"]["name"] == name)
                .map(|p| p["status"].clone())
                .unwrap_or_default()
        };
        let with = status("with");
        let without = status("without");
        let refused =
            without["reason"] == "ErrImagePull" || without["reason"] == "ImagePullBackOff";
        if berth_tests::kube::is_ready(&serde_json::json!({"status": with})) && refused {
            assert!(
                without["message"].as_str().unwrap_or("").contains("401")
                    || without["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_ascii_lowercase()
                        .contains("login"),
                "{without}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "with: {with}\nwithout: {without}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = ok(berth(home.path(), &["get", "events"])).stdout;
    assert!(
        events.contains("FailedToRetrieveImagePullSecret"),
        "{events}"
    );
}
