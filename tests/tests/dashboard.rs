//! The web dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver. Screenshots of each page are kept under
//! `target/tmp/dashboard/` as the run's artifacts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::kube::{build_image, kubectl, write};
use berth_tests::{BerthRun, berth, busybox, guests, ok};
use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver on a free port, with one headless chromium session; both
/// ended when dropped.
struct Browser {
    driver: Child,
    client: Option<Client>,
    /// Chromium's profile: every process of this browser names it.
    profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = berth_tests::free_port();
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver is needed (Debian packages chromium, chromium-driver): {e}")
            });
        assert!(
            berth_tests::wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(20)),
            "chromedriver did not listen on {port}"
        );
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                // As root, chromium's sandbox cannot be; the page is ours.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100",
                         format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session through chromedriver");
        Browser {
            driver,
            client: Some(client),
            profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// The text of the page's `css` element once `done` says so.
    async fn wait_for_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(element) = self.client().find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if done(&text) {
                    return text;
                }
                last = text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let page = match self.client().find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        self.screenshot("failed").await;
        panic!("{css} never showed what was wanted; last:\n{last}\nthe page:\n{page}");
    }

    /// Narrows the page to `namespace` ("" for all) as a user does, with
    /// the header's chooser.
    async fn choose_namespace(&self, namespace: &str) {
        let chooser = self
            .client()
            .find(Locator::Css("#namespace"))
            .await
            .unwrap();
        chooser.select_by_value(namespace).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client().screenshot().await.expect("a screenshot");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium's processes, wherever they went.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.path().display().to_string()])
            .status();
    }
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

/// examples/shop's three images, as `berth up examples/shop` builds them.
fn build_shop(home: &Path) {
    build_image(home, Path::new(guests::SHOP_API), "api:latest");
    build_image(home, Path::new(guests::SHOP_STOCK), "stock:latest");
    let front = tempfile::tempdir().unwrap();
    std::fs::copy(guests::SHOP_FRONT, front.path().join("app.wasm")).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop/front/static");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&examples)
        .arg(front.path().join("static"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        front.path().join("berth.toml"),
        "component = \"app.wasm\"\n[[files]]\nsource = \"static\"\nmount = \"/static\"\n",
    )
    .unwrap();
    ok(berth(
        home,
        &[
            "build",
            front.path().to_str().unwrap(),
            "-t",
            "front:latest",
        ],
    ));
}

const TICKER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: tools}
---
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: tools}
spec:
  containers:
  - {name: tick, image: busybox:1, command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done']}
"#;

#[tokio::test]
async fn the_dashboard_shows_the_shop_live_scales_it_tails_logs_and_charts_traffic() {
    let started = Instant::now();
    let home = tempfile::tempdir().unwrap();
    build_shop(home.path());
    busybox::load(home.path(), "busybox:1");
    let daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let ingress = daemon.ingress();
    let port = ingress.rsplit(':').next().unwrap().to_owned();

    // Without a session nothing is served: the page, the API behind it.
    for path in ["/", "/app.js", "/k8s/api/v1/pods", "/dash/images"] {
        let reply = berth_tests::send(
            "GET",
            &format!("{ingress}{path}"),
            &[("host", "dashboard.localhost"), ("x-berth-dashboard", "1")],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.text());
    }
    let link = ok(berth(home.path(), &["dashboard"]))
        .stdout
        .trim()
        .to_owned();
    assert!(
        link.starts_with(&format!("http://dashboard.localhost:{port}/login?code=")),
        "{link}"
    );

    eprintln!(
        "{:?} dashboard test: starting the browser",
        started.elapsed()
    );
    let browser = Browser::start().await;
    eprintln!("{:?} dashboard test: signing in", started.elapsed());
    browser.client().goto(&link).await.unwrap();
    browser.wait_for_text("#connection", |t| t == "live").await;
    // The link is good once: a second use is refused.
    let again = berth_tests::send(
        "GET",
        &link.replace("dashboard.localhost", "127.0.0.1"),
        &[("host", &format!("dashboard.localhost:{port}"))],
        Vec::new(),
    )
    .await;
    assert_eq!(again.status, 401, "{}", again.text());

    eprintln!("{:?} dashboard test: applying the shop", started.elapsed());
    // The shop, applied while the page is open, appears without a reload.
    let files = tempfile::tempdir().unwrap();
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop/shop.yaml");
    ok(berth(home.path(), &["apply", "-f", shop.to_str().unwrap()]));
    ok(berth(
        home.path(),
        &["apply", "-f", &write(files.path(), "ticker.yaml", TICKER)],
    ));
    browser
        .wait_for_text("#pods", |t| t.matches("Running").count() >= 6)
        .await;
    browser
        .wait_for_text("#deployments", |t| t.contains("api 3/3"))
        .await;
    browser.screenshot("overview").await;

    eprintln!("{:?} dashboard test: one namespace", started.elapsed());
    // Narrowed to one namespace, the page shows only what is in it, and
    // keeps to it across a reload; "All namespaces" brings the rest back.
    browser.choose_namespace("tools").await;
    browser
        .wait_for_text("#pods", |t| t.contains("ticker") && !t.contains("front"))
        .await;
    browser
        .wait_for_text("#deployments", |t| t.contains("No deployments"))
        .await;
    browser.client().refresh().await.unwrap();
    browser
        .wait_for_text("#pods", |t| t.contains("ticker") && !t.contains("front"))
        .await;
    browser.screenshot("namespace").await;
    browser.choose_namespace("").await;
    browser
        .wait_for_text("#pods", |t| t.contains("ticker") && t.contains("front"))
        .await;

    eprintln!("{:?} dashboard test: scaling", started.elapsed());
    // Scale api to 5 in the page: 5 Ready.
    let input = browser
        .client()
        .find(Locator::Css(r#"input[data-scale*='"api"']"#))
        .await
        .unwrap();
    input.click().await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("5\u{E004}").await.unwrap(); // then Tab: the change is made
    browser
        .wait_for_text("#deployments", |t| t.contains("api 5/5"))
        .await;
    let replicas = ok(kubectl(
        home.path(),
        &[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    ));
    assert_eq!(replicas.stdout, "5");
    // And what the scale did, as the events of what it acted on.
    browser
        .wait_for_text("#events", |t| {
            t.contains("Events of api since: scaled deployment api to 5")
                && t.contains("ScalingReplicaSet")
                && t.contains("to 5")
        })
        .await;

    eprintln!("{:?} dashboard test: logs", started.elapsed());
    // A pod's log, followed: a line that was not there arrives.
    browser
        .client()
        .goto(&format!(
            "http://dashboard.localhost:{port}/#/pod/tools/ticker"
        ))
        .await
        .unwrap();
    let first = browser.wait_for_text("#log", |t| t.contains("tick ")).await;
    let last_seen = first.lines().filter(|l| l.starts_with("tick ")).count();
    let later = browser
        .wait_for_text("#log", |t| {
            t.lines().filter(|l| l.starts_with("tick ")).count() > last_seen + 1
        })
        .await;
    assert!(
        later.contains(&format!("tick {}", last_seen + 1)),
        "{later}"
    );
    // Searched, only what matches stays.
    let search = browser
        .client()
        .find(Locator::Css("#log-search"))
        .await
        .unwrap();
    search.send_keys("tick 2").await.unwrap();
    let found = browser
        .wait_for_text("#log", |t| {
            !t.is_empty() && t.lines().all(|l| l.contains("tick 2"))
        })
        .await;
    assert!(found.lines().any(|l| l == "tick 2"), "{found}");
    browser.screenshot("pod").await;

    eprintln!("{:?} dashboard test: charts", started.elapsed());
    // A burst of requests, then the api Service's chart shows their rate.
    for _ in 0..200 {
        let reply = berth_tests::send(
            "GET",
            &format!("{ingress}/api/products"),
            &[("host", "api.localhost")],
            Vec::new(),
        )
        .await;
        assert!(reply.status < 500, "{}", reply.text());
    }
    browser
        .client()
        .goto(&format!(
            "http://dashboard.localhost:{port}/#/service/default/api"
        ))
        .await
        .unwrap();
    // Its figure drawn, and the points behind it holding the burst.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let points = browser
            .client()
            .execute(
                "const f = document.querySelector('figure[data-title=\"Requests per second\"]');\
                 return f ? Number(f.dataset.points || 0) : 0;",
                vec![],
            )
            .await
            .unwrap();
        if points.as_u64().unwrap_or(0) > 0 && chart_has_traffic(&browser).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the api chart never showed the burst"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    browser.screenshot("service").await;

    eprintln!("{:?} dashboard test: secrets", started.elapsed());
    // A Secret's keys are shown, its values only when asked for.
    ok(kubectl(
        home.path(),
        &[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2",
        ],
    ));
    browser
        .client()
        .goto(&format!("http://dashboard.localhost:{port}/#/"))
        .await
        .unwrap();
    let listed = browser
        .wait_for_text("#secrets", |t| t.contains("password"))
        .await;
    assert!(!listed.contains("hunter2"), "{listed}");
    browser
        .client()
        .find(Locator::Css("#secrets button[data-action=reveal]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text("#secrets", |t| t.contains("password=hunter2"))
        .await;

    eprintln!("{:?} dashboard test: images", started.elapsed());
    browser
        .client()
        .goto(&format!("http://dashboard.localhost:{port}/#/images"))
        .await
        .unwrap();
    browser
        .wait_for_text("main", |t| {
            t.contains("api:latest") && t.contains("busybox:1")
        })
        .await;
    browser.screenshot("images").await;
    if let Some(client) = browser.client.clone() {
        client.close().await.unwrap();
    }
}

/// Whether the service chart's points include a rate above zero.
async fn chart_has_traffic(browser: &Browser) -> bool {
    let series = browser
        .client()
        .execute(
            "return fetch('dash/series?service=default/api', {headers: {'X-Berth-Dashboard': '1'}})\
             .then(r => r.json());",
            vec![],
        )
        .await;
    match series {
        Ok(series) => series["rate"]
            .as_array()
            .is_some_and(|rates| rates.iter().any(|r| r.as_f64().unwrap_or(0.0) > 1.0)),
        Err(_) => false,
    }
}

const ACTED_ON: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: 'hello:1', imagePullPolicy: Never}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 1 1 *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: once, image: 'busybox:1', command: ['true']}]
"#;

impl Browser {
    /// Clicks the first element `css` finds, waiting for it to be there.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(element) = self.client().find(Locator::Css(css)).await
                && element.click().await.is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "nothing to click at {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What `kubectl get … -o jsonpath=PATH` prints, once it is what `done` wants.
fn wait_for_kubectl(home: &Path, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl(home, args);
        if out.success && done(&out.stdout) {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?}: {} {}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The image of the `web` Deployment's template, as kubectl prints it.
const WEB_IMAGE: [&str; 5] = [
    "get",
    "deploy",
    "web",
    "-o",
    "jsonpath={.spec.template.spec.containers[0].image}",
];

#[tokio::test]
async fn the_dashboard_rolls_back_restarts_deletes_and_runs_cron_jobs_through_the_api() {
    let home = tempfile::tempdir().unwrap();
    build_image(home.path(), Path::new(guests::HELLO), "hello:1");
    build_image(home.path(), Path::new(guests::HELLO), "hello:2");
    busybox::load(home.path(), "busybox:1");
    let _daemon = BerthRun::start_command(home.path(), &["daemon"]);
    let files = tempfile::tempdir().unwrap();
    ok(berth(
        home.path(),
        &["apply", "-f", &write(files.path(), "acted.yaml", ACTED_ON)],
    ));
    // A second revision to roll back from.
    ok(kubectl(
        home.path(),
        &["set", "image", "deployment/web", "web=hello:2"],
    ));
    let link = ok(berth(home.path(), &["dashboard"]))
        .stdout
        .trim()
        .to_owned();
    let browser = Browser::start().await;
    browser.client().goto(&link).await.unwrap();
    browser.wait_for_text("#connection", |t| t == "live").await;
    browser
        .wait_for_text("#deployments", |t| t.contains("web 2/2"))
        .await;
    assert_eq!(ok(kubectl(home.path(), &WEB_IMAGE)).stdout, "hello:2");

    // Roll back: the History dialog lists revision 1 to go back to.
    browser
        .click(r#"#deployments button[data-action=history][data-args*='"web"']"#)
        .await;
    browser
        .wait_for_text("#dialog", |t| {
            t.contains("hello:1") && t.contains("current")
        })
        .await;
    browser.screenshot("history").await;
    browser.click("#dialog button[data-action=rollback]").await;
    wait_for_kubectl(home.path(), &WEB_IMAGE, |image| image == "hello:1");
    browser
        .wait_for_text("#events", |t| {
            t.contains("Events of web since: rolled web back to revision 1")
                && t.contains("ScalingReplicaSet")
        })
        .await;

    // Restart: a new template annotation, so a rollout, as kubectl's.
    browser
        .click(r#"#deployments button[data-action=restart][data-args*='"web"']"#)
        .await;
    wait_for_kubectl(
        home.path(),
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.metadata.annotations}",
        ],
        |annotations| annotations.contains("kubectl.kubernetes.io/restartedAt"),
    );
    browser
        .wait_for_text("#events", |t| {
            t.contains("Events of web since: restarted deployment web")
        })
        .await;
    wait_for_kubectl(
        home.path(),
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        |out| out.contains("successfully rolled out"),
    );

    // Delete a pod: it goes, and its replica set makes up for it.
    let pods = wait_for_kubectl(
        home.path(),
        &["get", "pods", "-l", "app=web", "-o", "name"],
        |names| names.lines().count() == 2,
    );
    let victim = pods
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("pod/")
        .to_owned();
    browser
        .click(&format!(
            r#"#pods button[data-action=delete-pod][data-args*='"{victim}"']"#
        ))
        .await;
    wait_for_kubectl(
        home.path(),
        &["get", "pods", "-l", "app=web", "-o", "name"],
        |names| !names.contains(&victim) && names.lines().count() == 2,
    );
    browser
        .wait_for_text("#events", |t| t.contains(&format!("deleted pod {victim}")))
        .await;

    // A CronJob: suspended, resumed, and run now.
    browser
        .click(r#"#cronjobs button[data-action=suspend][data-args*='"nightly"']"#)
        .await;
    let suspended = [
        "get",
        "cronjob",
        "nightly",
        "-o",
        "jsonpath={.spec.suspend}",
    ];
    wait_for_kubectl(home.path(), &suspended, |s| s == "true");
    browser
        .wait_for_text("#cronjobs", |t| t.contains("Resume"))
        .await;
    browser
        .click(r#"#cronjobs button[data-action=suspend][data-args*='"nightly"']"#)
        .await;
    wait_for_kubectl(home.path(), &suspended, |s| s == "false");
    browser
        .click(r#"#cronjobs button[data-action=trigger][data-args*='"nightly"']"#)
        .await;
    wait_for_kubectl(
        home.path(),
        &[
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.succeeded}{\"\\n\"}{end}",
        ],
        |jobs| {
            jobs.lines()
                .any(|l| l.starts_with("nightly-manual-") && l.ends_with(" 1"))
        },
    );
    browser
        .wait_for_text("#jobs", |t| t.contains("nightly-manual-"))
        .await;
    browser.screenshot("actions").await;
    if let Some(client) = browser.client.clone() {
        client.close().await.unwrap();
    }
}
