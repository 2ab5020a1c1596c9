//! `berth registry serve` against real clients: skopeo, and raw HTTP for
//! the spec's status codes, headers and error bodies.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use berth_tests::{BerthRun, RawReply, berth, guests, send};
use sha2::Digest as _;

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A registry on a free loopback port over `root`.
fn registry(root: &Path, extra: &[&str]) -> BerthRun {
    berth_tests::registry_serve(root, extra)
}

fn host(reg: &BerthRun) -> String {
    reg.url.trim_start_matches("http://").to_owned()
}

fn error_code(reply: &RawReply) -> String {
    let body: serde_json::Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| panic!("error body is not JSON: {}", reply.text()));
    body["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

/// Pushes `bytes` as a blob of `repo` in one POST + PUT; returns its digest.
async fn push_blob(url: &str, repo: &str, bytes: &[u8], auth: &[(&str, &str)]) -> String {
    let digest = digest_of(bytes);
    let started = send(
        "POST",
        &format!("{url}/v2/{repo}/blobs/uploads/"),
        auth,
        vec![],
    )
    .await;
    assert_eq!(started.status, 202, "{}", started.text());
    let location = started.header("location").to_owned();
    let done = send(
        "PUT",
        &format!("{url}{location}?digest={digest}"),
        auth,
        bytes.to_vec(),
    )
    .await;
    assert_eq!(done.status, 201, "{}", done.text());
    digest
}

/// Pushes a manifest over `blobs` (config first) as `reference`; returns
/// its bytes and digest.
async fn push_manifest(
    url: &str,
    repo: &str,
    reference: &str,
    config: &[u8],
    layers: &[&[u8]],
    extra: serde_json::Value,
) -> (Vec<u8>, String) {
    let descriptor = |media: &str, bytes: &[u8]| serde_json::json!({"mediaType": media, "digest": digest_of(bytes), "size": bytes.len()});
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            manifest[k] = v;
        }
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let reply = send(
        "PUT",
        &format!("{url}/v2/{repo}/manifests/{reference}"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        bytes.clone(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let digest = digest_of(&bytes);
    assert_eq!(reply.header("docker-content-digest"), digest);
    (bytes, digest)
}

#[tokio::test]
async fn blob_uploads_follow_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let reg = registry(&root, &[]);
    let url = &reg.url;

    let base = send("GET", &format!("{url}/v2/"), &[], vec![]).await;
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        "registry/2.0"
    );

    // POST then PUT, and what HEAD and GET (with ranges) say of the blob.
    let blob = b"0123456789abcdef".to_vec();
    let digest = push_blob(url, "team/app", &blob, &[]).await;
    let blob_url = format!("{url}/v2/team/app/blobs/{digest}");
    let head = send("HEAD", &blob_url, &[], vec![]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "16");
    assert_eq!(head.header("docker-content-digest"), digest);
    assert!(head.body.is_empty());
    assert_eq!(send("GET", &blob_url, &[], vec![]).await.body, blob);
    let part = send("GET", &blob_url, &[("range", "bytes=2-5")], vec![]).await;
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], b"2345");
    assert_eq!(part.header("content-range"), "bytes 2-5/16");
    let bad = send("GET", &blob_url, &[("range", "bytes=20-30")], vec![]).await;
    assert_eq!(bad.status, 416);
    // A suffix: the last N bytes, or all of them when N exceeds the blob.
    let tail = send("GET", &blob_url, &[("range", "bytes=-4")], vec![]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], b"cdef");
    assert_eq!(tail.header("content-range"), "bytes 12-15/16");
    let all = send("GET", &blob_url, &[("range", "bytes=-500")], vec![]).await;
    assert_eq!(all.status, 206);
    assert_eq!(all.body, blob);
    let none = send("GET", &blob_url, &[("range", "bytes=-0")], vec![]).await;
    assert_eq!(none.status, 416);

    // The whole blob in one POST.
    let single = b"single post".to_vec();
    let single_digest = digest_of(&single);
    let reply = send(
        "POST",
        &format!("{url}/v2/team/app/blobs/uploads/?digest={single_digest}"),
        &[],
        single.clone(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        format!("/v2/team/app/blobs/{single_digest}")
    );

    // Chunks: in order they are taken, out of order they get 416.
    let chunked: Vec<u8> = (0..30u8).collect();
    let started = send(
        "POST",
        &format!("{url}/v2/team/app/blobs/uploads/"),
        &[],
        vec![],
    )
    .await;
    let location = format!("{url}{}", started.header("location"));
    let first = send(
        "PATCH",
        &location,
        &[("content-range", "0-9")],
        chunked[..10].to_vec(),
    )
    .await;
    assert_eq!(first.status, 202);
    assert_eq!(first.header("range"), "0-9");
    let skipped = send(
        "PATCH",
        &location,
        &[("content-range", "20-29")],
        chunked[20..].to_vec(),
    )
    .await;
    assert_eq!(skipped.status, 416, "{}", skipped.text());
    let status = send("GET", &location, &[], vec![]).await;
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), "0-9");
    let second = send(
        "PATCH",
        &location,
        &[("content-range", "10-19")],
        chunked[10..20].to_vec(),
    )
    .await;
    assert_eq!(second.header("range"), "0-19");
    let chunked_digest = digest_of(&chunked);
    let done = send(
        "PUT",
        &format!("{location}?digest={chunked_digest}"),
        &[("content-range", "20-29")],
        chunked[20..].to_vec(),
    )
    .await;
    assert_eq!(done.status, 201, "{}", done.text());
    let got = send(
        "GET",
        &format!("{url}/v2/team/app/blobs/{chunked_digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(got.body, chunked);

    // Bytes that do not match their digest: refused, nothing kept.
    let started = send(
        "POST",
        &format!("{url}/v2/team/app/blobs/uploads/"),
        &[],
        vec![],
    )
    .await;
    let claimed = digest_of(b"what the client claims");
    let lie = send(
        "PUT",
        &format!("{url}{}?digest={claimed}", started.header("location")),
        &[],
        b"something else".to_vec(),
    )
    .await;
    assert_eq!(lie.status, 400);
    assert_eq!(error_code(&lie), "DIGEST_INVALID");
    for d in [claimed, digest_of(b"something else")] {
        let head = send("HEAD", &format!("{url}/v2/team/app/blobs/{d}"), &[], vec![]).await;
        assert_eq!(head.status, 404);
        assert!(!root.join("blobs/sha256").join(&d[7..]).exists());
    }
    assert_eq!(std::fs::read_dir(root.join("uploads")).unwrap().count(), 0);

    // Cancelling an upload forgets it.
    let started = send(
        "POST",
        &format!("{url}/v2/team/app/blobs/uploads/"),
        &[],
        vec![],
    )
    .await;
    let location = format!("{url}{}", started.header("location"));
    assert_eq!(send("DELETE", &location, &[], vec![]).await.status, 204);
    let gone = send("GET", &location, &[], vec![]).await;
    assert_eq!(gone.status, 404);
    assert_eq!(error_code(&gone), "BLOB_UPLOAD_UNKNOWN");

    // Names outside the grammar, `..` above all, never reach the disk.
    for bad in ["a/../../etc", "UPPER", "a//b", "-a"] {
        let reply = send(
            "POST",
            &format!("{url}/v2/{bad}/blobs/uploads/"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(error_code(&reply), "NAME_INVALID", "{bad}");
    }
    let unknown = send(
        "GET",
        &format!("{url}/v2/team/app/blobs/{}", digest_of(b"none")),
        &[],
        vec![],
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(error_code(&unknown), "BLOB_UNKNOWN");

    // Cross-repository mount: 201 from a repository that has the blob,
    // an ordinary upload (202) from one that does not.
    let mount = send(
        "POST",
        &format!("{url}/v2/other/app/blobs/uploads/?mount={digest}&from=team/app"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(mount.status, 201);
    assert_eq!(
        mount.header("location"),
        format!("/v2/other/app/blobs/{digest}")
    );
    let fallback = send(
        "POST",
        &format!("{url}/v2/other/app/blobs/uploads/?mount={digest}&from=nobody/here"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(fallback.status, 202);

    // Deleting a blob from one repository leaves the other's.
    assert_eq!(send("DELETE", &blob_url, &[], vec![]).await.status, 202);
    assert_eq!(send("HEAD", &blob_url, &[], vec![]).await.status, 404);
    let other = send(
        "HEAD",
        &format!("{url}/v2/other/app/blobs/{digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn manifests_tags_and_referrers_follow_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&dir.path().join("registry"), &[]);
    let url = &reg.url;
    let (config, layer) = (b"{}".as_slice(), b"layer bytes".as_slice());
    push_blob(url, "app", config, &[]).await;
    push_blob(url, "app", layer, &[]).await;

    // A manifest naming a blob the repository lacks is refused.
    let missing = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(b"never pushed"), "size": 12}],
    });
    let reply = send(
        "PUT",
        &format!("{url}/v2/app/manifests/v1"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        serde_json::to_vec(&missing).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(error_code(&reply), "MANIFEST_BLOB_UNKNOWN");
    // Unless the layer is non-distributable: fetched from its urls, never pushed.
    let mut foreign = missing.clone();
    foreign["layers"][0]["mediaType"] =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
    foreign["layers"][0]["urls"] = serde_json::json!(["https://example.com/layer"]);
    let reply = send(
        "PUT",
        &format!("{url}/v2/app/manifests/foreign"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        serde_json::to_vec(&foreign).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let untag = send(
        "DELETE",
        &format!("{url}/v2/app/manifests/foreign"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(untag.status, 202);

    let (bytes, digest) =
        push_manifest(url, "app", "v1", config, &[layer], serde_json::json!({})).await;
    for reference in ["v1", digest.as_str()] {
        let got = send(
            "GET",
            &format!("{url}/v2/app/manifests/{reference}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, bytes, "stored byte for byte");
        assert_eq!(
            got.header("content-type"),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(got.header("docker-content-digest"), digest);
        let head = send(
            "HEAD",
            &format!("{url}/v2/app/manifests/{reference}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(head.header("content-length"), bytes.len().to_string());
    }

    // By digest, the bytes must hash to it; and manifests have a size cap.
    let wrong = send(
        "PUT",
        &format!("{url}/v2/app/manifests/{}", digest_of(b"other")),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        bytes.clone(),
    )
    .await;
    assert_eq!(error_code(&wrong), "DIGEST_INVALID");
    let huge = send(
        "PUT",
        &format!("{url}/v2/app/manifests/huge"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        vec![b' '; 5 << 20],
    )
    .await;
    assert_eq!(huge.status, 413);

    // Tags list in lexical order, a page at a time.
    for tag in ["b", "a", "d", "c"] {
        let reply = send(
            "PUT",
            &format!("{url}/v2/app/manifests/{tag}"),
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            bytes.clone(),
        )
        .await;
        assert_eq!(reply.status, 201);
    }
    let mut pages = Vec::new();
    let mut next = format!("{url}/v2/app/tags/list?n=2");
    loop {
        let page = send("GET", &next, &[], vec![]).await;
        assert_eq!(page.status, 200);
        let json: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
        pages.push(json["tags"].clone());
        let link = page.header("link");
        if link.is_empty() {
            break;
        }
        let path = link.trim_start_matches('<').split('>').next().unwrap();
        assert!(link.ends_with("rel=\"next\""), "{link}");
        next = format!("{url}{path}");
    }
    assert_eq!(
        pages,
        [
            serde_json::json!(["a", "b"]),
            serde_json::json!(["c", "d"]),
            serde_json::json!(["v1"])
        ]
    );
    let unknown = send("GET", &format!("{url}/v2/nothing/tags/list"), &[], vec![]).await;
    assert_eq!(error_code(&unknown), "NAME_UNKNOWN");

    // An artifact whose subject is the image shows among its referrers.
    let sbom = b"sbom".as_slice();
    push_blob(url, "app", sbom, &[]).await;
    let subject = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest, "size": bytes.len(),
    });
    let artifact = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(config), "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": digest_of(sbom), "size": 4}],
        "subject": subject,
        "annotations": {"org.example": "yes"},
    });
    let artifact_bytes = serde_json::to_vec(&artifact).unwrap();
    let artifact_digest = digest_of(&artifact_bytes);
    let reply = send(
        "PUT",
        &format!("{url}/v2/app/manifests/{artifact_digest}"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        artifact_bytes,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.header("oci-subject"), digest);
    let referrers = send(
        "GET",
        &format!("{url}/v2/app/referrers/{digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(referrers.status, 200);
    assert_eq!(
        referrers.header("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let index: serde_json::Value = serde_json::from_slice(&referrers.body).unwrap();
    assert_eq!(index["manifests"][0]["digest"], artifact_digest.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    assert_eq!(index["manifests"][0]["annotations"]["org.example"], "yes");
    let filtered = send(
        "GET",
        &format!("{url}/v2/app/referrers/{digest}?artifactType=application/vnd.example.other"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
    let index: serde_json::Value = serde_json::from_slice(&filtered.body).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
    let none = send(
        "GET",
        &format!("{url}/v2/app/referrers/{}", digest_of(b"x")),
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        none.status, 200,
        "an unknown subject has no referrers, not a 404"
    );

    // Deleting a tag, then the manifest (which takes its other tags and
    // its entry among referrers with it).
    assert_eq!(
        send("DELETE", &format!("{url}/v2/app/manifests/a"), &[], vec![])
            .await
            .status,
        202
    );
    assert_eq!(
        send("GET", &format!("{url}/v2/app/manifests/a"), &[], vec![])
            .await
            .status,
        404
    );
    assert_eq!(
        send("GET", &format!("{url}/v2/app/manifests/b"), &[], vec![])
            .await
            .status,
        200
    );
    let deleted = send(
        "DELETE",
        &format!("{url}/v2/app/manifests/{artifact_digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(deleted.status, 202);
    let referrers = send(
        "GET",
        &format!("{url}/v2/app/referrers/{digest}"),
        &[],
        vec![],
    )
    .await;
    let index: serde_json::Value = serde_json::from_slice(&referrers.body).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert_eq!(
        send(
            "DELETE",
            &format!("{url}/v2/app/manifests/{digest}"),
            &[],
            vec![]
        )
        .await
        .status,
        202
    );
    let gone = send("GET", &format!("{url}/v2/app/manifests/b"), &[], vec![]).await;
    assert_eq!(error_code(&gone), "MANIFEST_UNKNOWN");
    // A reference that names nothing is 404 whatever its form (the
    // conformance suite asks for `.INVALID_MANIFEST_NAME`); a push to one
    // is still refused as invalid.
    for reference in [".INVALID_MANIFEST_NAME", "sha256:short", "md5:abc"] {
        for method in ["GET", "HEAD", "DELETE"] {
            let reply = send(
                method,
                &format!("{url}/v2/app/manifests/{reference}"),
                &[],
                vec![],
            )
            .await;
            assert_eq!(reply.status, 404, "{method} {reference}");
        }
    }
    let refused = send(
        "PUT",
        &format!("{url}/v2/app/manifests/.INVALID_MANIFEST_NAME"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(refused.status, 400);
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is required for this test (Debian package `skopeo`; .ci/run installs it)")
}

#[tokio::test]
async fn pushing_needs_credentials_and_pull_only_users_cannot_push() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let mut file = std::fs::File::create(&htpasswd).unwrap();
    for (user, password) in [("alice", "wonderland"), ("bob", "builder")] {
        writeln!(file, "{user}:{}", bcrypt::hash(password, 4).unwrap()).unwrap();
    }
    let reg = registry(
        &dir.path().join("registry"),
        &["--auth", htpasswd.to_str().unwrap(), "--pull-only", "bob"],
    );
    let url = &reg.url;
    let uploads = format!("{url}/v2/team/app/blobs/uploads/");

    let anonymous = send("POST", &uploads, &[], vec![]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(error_code(&anonymous), "UNAUTHORIZED");
    let challenge = anonymous.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer realm=\"http://"),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:team/app:pull,push\""),
        "{challenge}"
    );
    let wrong = basic("alice", "looking-glass");
    assert_eq!(
        send("POST", &uploads, &[("authorization", &wrong)], vec![])
            .await
            .status,
        401
    );
    let alice = basic("alice", "wonderland");
    let digest = push_blob(
        url,
        "team/app",
        b"secret layer",
        &[("authorization", &alice)],
    )
    .await;

    let bob = basic("bob", "builder");
    let denied = send("POST", &uploads, &[("authorization", &bob)], vec![]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(error_code(&denied), "DENIED");
    let blob_url = format!("{url}/v2/team/app/blobs/{digest}");
    assert_eq!(
        send("GET", &blob_url, &[("authorization", &bob)], vec![])
            .await
            .status,
        200
    );
    assert_eq!(send("GET", &blob_url, &[], vec![]).await.status, 401);

    // The token flow: bob asks for push but is granted pull only.
    let token_url =
        format!("{url}/token?service=berth-registry&scope=repository:team/app:pull,push");
    let token = |reply: RawReply| {
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        format!("Bearer {}", json["token"].as_str().unwrap())
    };
    assert_eq!(send("GET", &token_url, &[], vec![]).await.status, 401);
    let bob_token = token(send("GET", &token_url, &[("authorization", &bob)], vec![]).await);
    assert_eq!(
        send("GET", &blob_url, &[("authorization", &bob_token)], vec![])
            .await
            .status,
        200
    );
    assert_eq!(
        send("POST", &uploads, &[("authorization", &bob_token)], vec![])
            .await
            .status,
        403
    );
    let alice_token = token(send("GET", &token_url, &[("authorization", &alice)], vec![]).await);
    assert_eq!(
        send("POST", &uploads, &[("authorization", &alice_token)], vec![])
            .await
            .status,
        202
    );
    let other_repo = format!("{url}/v2/elsewhere/blobs/uploads/");
    assert_eq!(
        send(
            "POST",
            &other_repo,
            &[("authorization", &alice_token)],
            vec![]
        )
        .await
        .status,
        401
    );
    let forged = format!("{}x", alice_token);
    assert_eq!(
        send("POST", &uploads, &[("authorization", &forged)], vec![])
            .await
            .status,
        401
    );

    // skopeo follows the challenge to the token endpoint.
    let home = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(guests::HELLO, app.path().join("hello.wasm")).unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        "component = \"hello.wasm\"\n",
    )
    .unwrap();
    assert!(
        berth(
            home.path(),
            &["build", app.path().to_str().unwrap(), "-t", "app:1"]
        )
        .success
    );
    let source = format!("oci:{}:app:1", home.path().join("store").display());
    let target = format!("docker://{}/team/app:1", host(&reg));
    let refused = skopeo(&["copy", "--dest-tls-verify=false", &source, &target]);
    assert!(!refused.status.success());
    let copied = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:wonderland",
        &source,
        &target,
    ]);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
}

#[tokio::test]
async fn skopeo_round_trips_an_image_byte_for_byte() {
    let home = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(guests::ECHO, app.path().join("echo.wasm")).unwrap();
    std::fs::create_dir(app.path().join("static")).unwrap();
    std::fs::write(app.path().join("static/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        "component = \"echo.wasm\"\n[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    )
    .unwrap();
    assert!(
        berth(
            home.path(),
            &["build", app.path().to_str().unwrap(), "-t", "app:1"]
        )
        .success
    );
    let reg = registry(&home.path().join("registry"), &[]);

    let source = format!("oci:{}:app:1", home.path().join("store").display());
    let remote = format!("docker://{}/team/app:1", host(&reg));
    let back_dir = home.path().join("back");
    let back = format!("oci:{}:app:1", back_dir.display());
    for (from, to) in [(&source, &remote), (&remote, &back)] {
        // Byte for byte: skopeo would otherwise gzip plain tar layers on
        // their way to a registry.
        let out = skopeo(&[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let raw = |reference: &str| {
        let out = skopeo(&["inspect", "--raw", "--tls-verify=false", reference]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(raw(&source), raw(&remote));
    assert_eq!(raw(&source), raw(&back));
    // Every blob came back with the same bytes.
    let blobs = |dir: &Path| {
        let mut all: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(blobs(&home.path().join("store")), blobs(&back_dir));
}

/// Writes the start of a PATCH whose body never finishes, so the registry
/// is killed in the middle of receiving it.
fn start_unfinished_patch(
    url: &str,
    path: &str,
    declared: usize,
    sent: &[u8],
) -> std::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(sent).unwrap();
    stream.flush().unwrap();
    stream
}

#[tokio::test]
async fn a_killed_registry_serves_what_was_committed_and_the_upload_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let mut reg = registry(&root, &[]);
    let committed = push_blob(&reg.url, "app", b"committed before the crash", &[]).await;

    // 3 MiB, of which 2 MiB are sent before the kill.
    let blob: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let digest = digest_of(&blob);
    let started = send(
        "POST",
        &format!("{}/v2/app/blobs/uploads/", reg.url),
        &[],
        vec![],
    )
    .await;
    let location = started.header("location").to_owned();
    let _stream = start_unfinished_patch(&reg.url, &location, blob.len(), &blob[..2 << 20]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    reg.kill();

    let reg = registry(&root, &[]);
    let url = &reg.url;
    let head = send(
        "HEAD",
        &format!("{url}/v2/app/blobs/{committed}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(head.status, 200, "a committed blob survives");
    let half = send("HEAD", &format!("{url}/v2/app/blobs/{digest}"), &[], vec![]).await;
    assert_eq!(half.status, 404, "an unfinished upload is not a blob");
    assert!(!root.join("blobs/sha256").join(&digest[7..]).exists());

    // The upload resumes from where the registry says it got to.
    let status = send("GET", &format!("{url}{location}"), &[], vec![]).await;
    assert_eq!(status.status, 204);
    let have: usize = match status.header("range").split_once('-') {
        Some(("0", "0")) if status.header("range") == "0-0" => 0,
        Some((_, end)) => end.parse::<usize>().unwrap() + 1,
        None => panic!("no Range in {:?}", status.headers),
    };
    assert!(have <= 2 << 20, "{have}");
    let range = format!("{have}-{}", blob.len() - 1);
    let done = send(
        "PUT",
        &format!("{url}{location}?digest={digest}"),
        &[("content-range", &range)],
        blob[have..].to_vec(),
    )
    .await;
    assert_eq!(done.status, 201, "{}", done.text());
    let got = send("GET", &format!("{url}/v2/app/blobs/{digest}"), &[], vec![]).await;
    assert!(got.body == blob, "the resumed blob is whole");
}

#[tokio::test]
async fn sha512_digests_work_wherever_sha256_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&dir.path().join("registry"), &[]);
    let url = &reg.url;
    let sha512 = |bytes: &[u8]| format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)));
    let push = |bytes: Vec<u8>| async move {
        let digest = sha512(&bytes);
        let started = send("POST", &format!("{url}/v2/app/blobs/uploads/"), &[], vec![]).await;
        assert_eq!(started.status, 202);
        let location = started.header("location").to_owned();
        let done = send(
            "PUT",
            &format!("{url}{location}?digest={digest}"),
            &[],
            bytes,
        )
        .await;
        assert_eq!(done.status, 201, "{}", done.text());
        assert_eq!(done.header("docker-content-digest"), digest);
        digest
    };
    let (config, layer) = (b"{}".to_vec(), b"a layer".to_vec());
    let config_digest = push(config.clone()).await;
    let layer_digest = push(layer.clone()).await;
    let got = send(
        "GET",
        &format!("{url}/v2/app/blobs/{layer_digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!((got.status, &got.body[..]), (200, &layer[..]));
    // Content that is not what the digest says is refused, and not kept.
    let started = send("POST", &format!("{url}/v2/app/blobs/uploads/"), &[], vec![]).await;
    let location = started.header("location").to_owned();
    let wrong = send(
        "PUT",
        &format!("{url}{location}?digest={}", sha512(b"other")),
        &[],
        layer.clone(),
    )
    .await;
    assert_eq!(error_code(&wrong), "DIGEST_INVALID");

    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let digest = sha512(&manifest);
    let put = send(
        "PUT",
        &format!("{url}/v2/app/manifests/{digest}"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        manifest.clone(),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.header("docker-content-digest"), digest);
    let got = send(
        "GET",
        &format!("{url}/v2/app/manifests/{digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!((got.status, &got.body[..]), (200, &manifest[..]));
    let deleted = send(
        "DELETE",
        &format!("{url}/v2/app/blobs/{layer_digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(deleted.status, 202);
    let gone = send(
        "HEAD",
        &format!("{url}/v2/app/blobs/{layer_digest}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(gone.status, 404);
}
