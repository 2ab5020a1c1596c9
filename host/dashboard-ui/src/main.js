// berth's dashboard: what runs on the host, live from the Kubernetes API's
// watches, with the actions people take most, charts of the metrics berth
// keeps in memory, and a live tail of any container's log.

import { ApiError, Feed, call, get, lines, mergePatch, whenSignedOut } from "./api.js";
import { chart } from "./charts.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");

// ---- helpers ---------------------------------------------------------

const esc = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function age(timestamp) {
  if (!timestamp) return "";
  const s = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (s < 120) return `${Math.floor(s)}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const ns = (o) => o.metadata.namespace ?? "";
const link = (href, text) => `<a href="${esc(href)}">${esc(text)}</a>`;
const button = (action, label, data, title = "") =>
  `<button data-action="${action}" data-args="${esc(JSON.stringify(data))}"` +
  `${title ? ` title="${esc(title)}"` : ""}>${esc(label)}</button>`;

function table(columns, rows, empty) {
  if (rows.length === 0) return `<p class="muted">${esc(empty)}</p>`;
  const head = columns.map((c) => `<th>${esc(c)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function section(id, title, inner) {
  return `<section id="${id}"><h2>${esc(title)}</h2>${inner}</section>`;
}

// ---- what the host runs, kept current ----------------------------------

const RESOURCES = [
  "namespaces", "deployments", "statefulsets", "replicasets", "jobs", "cronjobs",
  "pods", "services", "ingresses", "hpas", "events", "secrets",
];

let scheduled = false;
function rerender() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

const feed = new Feed(RESOURCES, rerender);
const all = (resource) => feed.list(resource);
const find = (resource, namespace, name) => feed.get(resource, namespace, name);

// The namespace the overview is narrowed to ("" for all), as kubectl's
// -n: chosen in the header, remembered by the browser, and taken from a
// link's `?namespace=` so a narrowed view can be shared.
const chooser = document.getElementById("namespace");
let narrowed = new URLSearchParams(location.hash.split("?")[1] ?? "").get("namespace") ??
  localStorage.getItem("berth.namespace") ?? "";
function narrow(namespace) {
  narrowed = namespace;
  localStorage.setItem("berth.namespace", namespace);
  rerender();
}
chooser.addEventListener("change", () => narrow(chooser.value));
const shown = (resource) => (narrowed ? all(resource).filter((o) => ns(o) === narrowed) : all(resource));

function namespaceChoices() {
  const names = all("namespaces").map((n) => n.metadata.name);
  // A chosen namespace that is not (or no longer) there stays chosen, so
  // the page says why it shows nothing.
  if (narrowed && !names.includes(narrowed)) names.push(narrowed);
  names.sort();
  const wanted = ["", ...names].join("\n");
  if (chooser.dataset.names !== wanted) {
    chooser.dataset.names = wanted;
    chooser.innerHTML = `<option value="">All namespaces</option>` +
      names.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join("");
  }
  chooser.value = narrowed;
}

let info = { ingress: null };
get("dash/info").then((i) => {
  info = i;
  rerender();
}, () => {});

// ---- pods ---------------------------------------------------------------

// The STATUS kubectl prints for a pod.
function podStatus(p) {
  if (p.metadata.deletionTimestamp) return "Terminating";
  const s = p.status ?? {};
  const inits = s.initContainerStatuses ?? [];
  const specs = p.spec.initContainers ?? [];
  for (const [i, c] of inits.entries()) {
    const sidecar = specs.find((x) => x.name === c.name)?.restartPolicy === "Always";
    if (c.state?.terminated?.exitCode === 0) continue;
    if (sidecar && c.started) continue;
    if (c.state?.terminated) return `Init:${c.state.terminated.reason ?? "Error"}`;
    const waiting = c.state?.waiting?.reason;
    if (waiting && waiting !== "PodInitializing") return `Init:${waiting}`;
    return `Init:${i}/${specs.length}`;
  }
  for (const c of s.containerStatuses ?? []) {
    if (c.state?.waiting?.reason) return c.state.waiting.reason;
    if (c.state?.terminated?.reason && s.phase !== "Succeeded") return c.state.terminated.reason;
  }
  return s.reason ?? s.phase ?? "Pending";
}

function podReady(p) {
  const statuses = p.status?.containerStatuses ?? [];
  const sidecars = (p.status?.initContainerStatuses ?? []).filter(
    (c) => (p.spec.initContainers ?? []).find((x) => x.name === c.name)?.restartPolicy === "Always",
  );
  const total = p.spec.containers.length + sidecars.length;
  const ready = [...statuses, ...sidecars].filter((c) => c.ready).length;
  return `${ready}/${total}`;
}

const restarts = (p) =>
  [...(p.status?.containerStatuses ?? []), ...(p.status?.initContainerStatuses ?? [])].reduce(
    (n, c) => n + (c.restartCount ?? 0),
    0,
  );

const statusClass = (status) =>
  /Running|Completed|Succeeded/.test(status)
    ? "ok"
    : /Pending|Init:\d|PodInitializing|ContainerCreating|Terminating/.test(status)
      ? "wait"
      : "bad";

// wasm, linux, or both in one pod.
function runtime(p) {
  const runtimes = Object.values(p.status?.runtimes ?? {});
  return runtimes.length ? [...new Set(runtimes)].sort().join("+") : p.spec.runtimeClassName ?? "";
}

function podRows(pods) {
  return pods
    .sort((a, b) => `${ns(a)}/${a.metadata.name}`.localeCompare(`${ns(b)}/${b.metadata.name}`))
    .map((p) => {
      const status = podStatus(p);
      return [
        esc(ns(p)),
        link(`#/pod/${ns(p)}/${p.metadata.name}`, p.metadata.name),
        esc(podReady(p)),
        `<span class="status ${statusClass(status)}">${esc(status)}</span>`,
        esc(restarts(p)),
        esc(age(p.metadata.creationTimestamp)),
        esc(p.spec.nodeName ?? ""),
        esc(runtime(p)),
        button("delete-pod", "Delete", [ns(p), p.metadata.name], "delete this pod"),
      ];
    });
}

// ---- the overview -----------------------------------------------------

function workloads() {
  const deployments = shown("deployments").map((d) => [
    esc(ns(d)),
    esc(d.metadata.name),
    `<span class="replicas">${esc(d.status?.readyReplicas ?? 0)}/${esc(d.spec.replicas ?? 1)}</span>`,
    esc(d.status?.updatedReplicas ?? 0),
    esc(d.status?.availableReplicas ?? 0),
    esc(age(d.metadata.creationTimestamp)),
    [
      button("scale", "−", ["deployments", ns(d), d.metadata.name, (d.spec.replicas ?? 1) - 1], "scale down"),
      `<input class="replicas-input" type="number" min="0" value="${esc(d.spec.replicas ?? 1)}" ` +
        `data-scale="${esc(JSON.stringify(["deployments", ns(d), d.metadata.name]))}">`,
      button("scale", "+", ["deployments", ns(d), d.metadata.name, (d.spec.replicas ?? 1) + 1], "scale up"),
      button("restart", "Restart", ["deployments", ns(d), d.metadata.name], "rollout restart"),
      button("history", "History", [ns(d), d.metadata.name], "revisions to roll back to"),
    ].join(" "),
  ]);
  const statefulsets = shown("statefulsets").map((s) => [
    esc(ns(s)),
    esc(s.metadata.name),
    `${esc(s.status?.readyReplicas ?? 0)}/${esc(s.spec.replicas ?? 1)}`,
    esc(age(s.metadata.creationTimestamp)),
    [
      button("scale", "−", ["statefulsets", ns(s), s.metadata.name, (s.spec.replicas ?? 1) - 1]),
      button("scale", "+", ["statefulsets", ns(s), s.metadata.name, (s.spec.replicas ?? 1) + 1]),
      button("restart", "Restart", ["statefulsets", ns(s), s.metadata.name]),
    ].join(" "),
  ]);
  const jobs = shown("jobs").map((j) => [
    esc(ns(j)),
    esc(j.metadata.name),
    `${esc(j.status?.succeeded ?? 0)}/${esc(j.spec.completions ?? 1)}`,
    esc(j.status?.active ?? 0),
    esc(j.status?.failed ?? 0),
    esc(age(j.metadata.creationTimestamp)),
  ]);
  const cronjobs = shown("cronjobs").map((c) => [
    esc(ns(c)),
    esc(c.metadata.name),
    esc(c.spec.schedule),
    c.spec.suspend ? "yes" : "no",
    esc(c.status?.lastScheduleTime ? age(c.status.lastScheduleTime) : "never"),
    [
      button("suspend", c.spec.suspend ? "Resume" : "Suspend", [ns(c), c.metadata.name, !c.spec.suspend]),
      button("trigger", "Run now", [ns(c), c.metadata.name]),
    ].join(" "),
  ]);
  return (
    section("deployments", "Deployments",
      table(["Namespace", "Name", "Ready", "Up to date", "Available", "Age", ""], deployments, "No deployments.")) +
    (statefulsets.length ? section("statefulsets", "StatefulSets",
      table(["Namespace", "Name", "Ready", "Age", ""], statefulsets, "")) : "") +
    (jobs.length ? section("jobs", "Jobs",
      table(["Namespace", "Name", "Completions", "Active", "Failed", "Age"], jobs, "")) : "") +
    (cronjobs.length ? section("cronjobs", "CronJobs",
      table(["Namespace", "Name", "Schedule", "Suspended", "Last run", ""], cronjobs, "")) : "")
  );
}

function serviceUrl(s) {
  if (!info.ingress) return "";
  const port = info.ingress.split(":").pop();
  const host = ns(s) === "default" ? `${s.metadata.name}.localhost` : `${s.metadata.name}.${ns(s)}.localhost`;
  return `http://${host}:${port}/`;
}

function networking() {
  const services = shown("services").map((s) => [
    esc(ns(s)),
    link(`#/service/${ns(s)}/${s.metadata.name}`, s.metadata.name),
    esc(s.spec.type ?? "ClusterIP"),
    esc(s.spec.clusterIP ?? ""),
    esc((s.spec.ports ?? []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol ?? "TCP"}`).join(", ")),
    serviceUrl(s) ? `<a href="${esc(serviceUrl(s))}" target="_blank" rel="noopener">${esc(serviceUrl(s))}</a>` : "",
  ]);
  const ingresses = shown("ingresses").map((i) => [
    esc(ns(i)),
    esc(i.metadata.name),
    esc((i.spec.rules ?? []).map((r) => r.host ?? "*").join(", ")),
    esc(age(i.metadata.creationTimestamp)),
  ]);
  const hpas = shown("hpas").map((h) => [
    esc(ns(h)),
    esc(h.metadata.name),
    esc(`${h.spec.scaleTargetRef.kind}/${h.spec.scaleTargetRef.name}`),
    esc(`${h.spec.minReplicas ?? 1}–${h.spec.maxReplicas}`),
    esc(h.status?.currentReplicas ?? 0),
  ]);
  return (
    section("services", "Services",
      table(["Namespace", "Name", "Type", "Cluster IP", "Ports", "URL"], services, "No services.")) +
    (ingresses.length ? section("ingresses", "Ingresses",
      table(["Namespace", "Name", "Hosts", "Age"], ingresses, "")) : "") +
    (hpas.length ? section("hpas", "Autoscalers",
      table(["Namespace", "Name", "Target", "Replicas", "Current"], hpas, "")) : "")
  );
}

// Secrets are listed by name and keys (the feed carries no values); a
// Secret's values are read, and shown, only when asked for.
const revealed = new Map();
function secrets() {
  const rows = shown("secrets").map((s) => {
    const key = `${ns(s)}/${s.metadata.name}`;
    const data = revealed.get(key);
    const shown = data
      ? Object.entries(data).map(([k, v]) => `<code>${esc(k)}=${esc(decode(v))}</code>`).join(" ")
      : Object.keys(s.data ?? {}).map((k) => `<code>${esc(k)}</code>`).join(" ");
    return [
      esc(ns(s)),
      esc(s.metadata.name),
      esc(s.type ?? "Opaque"),
      shown,
      button("reveal", revealed.has(key) ? "Hide" : "Show values", [key]),
    ];
  });
  return rows.length ? section("secrets", "Secrets", table(["Namespace", "Name", "Type", "Keys", ""], rows, "")) : "";
}

function decode(base64) {
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)));
  } catch (_) {
    return "(binary)";
  }
}

// What an action did: the events of the object it acted on, from then.
let focus = null;
function events() {
  let list = shown("events").sort((a, b) => eventTime(b).localeCompare(eventTime(a)));
  let title = "Recent events";
  if (focus) {
    list = list.filter((e) => e.involvedObject?.name?.startsWith(focus.name) && (e.metadata.namespace ?? "") === focus.namespace);
    title = `Events of ${focus.what} since: ${focus.action}`;
  }
  const rows = list.slice(0, 25).map((e) => [
    esc(age(eventTime(e))),
    `<span class="status ${e.type === "Warning" ? "bad" : "ok"}">${esc(e.type)}</span>`,
    esc(e.reason),
    esc(`${e.involvedObject?.kind ?? ""}/${e.involvedObject?.name ?? ""}`),
    esc(e.message),
  ]);
  const clear = focus ? ` ${button("unfocus", "All events", [])}` : "";
  return `<section id="events"><h2>${esc(title)}${clear}</h2>${table(["Age", "Type", "Reason", "Object", "Message"], rows, "No events.")}</section>`;
}
const eventTime = (e) => e.lastTimestamp ?? e.eventTime ?? e.metadata.creationTimestamp ?? "";

let notice = "";
function overview() {
  const pods = shown("pods");
  // (Once the namespaces are listed: there is always "default".)
  const missing = narrowed && all("namespaces").length > 0 && !find("namespaces", "", narrowed)
    ? `<p class="notice">There is no namespace ${esc(narrowed)}.</p>` : "";
  return (
    (notice ? `<p class="notice">${esc(notice)}</p>` : "") +
    missing +
    events() +
    workloads() +
    section("pods", "Pods",
      table(["Namespace", "Name", "Ready", "Status", "Restarts", "Age", "Node", "Runtime", ""], podRows(pods), "No pods.")) +
    networking() +
    secrets()
  );
}

// ---- one pod: containers, log tail, charts -------------------------------

let tail = null;
function podView(namespace, name) {
  const p = find("pods", namespace, name);
  if (!p) return `<p class="muted">Pod ${esc(namespace)}/${esc(name)} is not there (yet).</p>`;
  const containers = [...(p.spec.initContainers ?? []), ...p.spec.containers].map((c) => c.name);
  if (!tail || tail.pod !== `${namespace}/${name}`) {
    tail?.stop();
    tail = new LogTail(namespace, name, p.spec.containers[0].name);
  }
  const statuses = [...(p.status?.initContainerStatuses ?? []), ...(p.status?.containerStatuses ?? [])];
  const rows = statuses.map((c) => [
    esc(c.name),
    esc(c.image),
    esc(Object.keys(c.state ?? {})[0] ?? ""),
    c.ready ? "yes" : "no",
    esc(c.restartCount ?? 0),
  ]);
  const options = containers
    .map((c) => `<option${c === tail.container ? " selected" : ""}>${esc(c)}</option>`)
    .join("");
  return (
    `<h1>Pod ${esc(namespace)}/${esc(name)} <span class="status ${statusClass(podStatus(p))}">${esc(podStatus(p))}</span></h1>` +
    section("containers", "Containers", table(["Name", "Image", "State", "Ready", "Restarts"], rows, "")) +
    `<section id="usage"><h2>CPU and memory (last hour)</h2><div class="charts" data-series="pod=${esc(namespace)}/${esc(name)}"></div></section>` +
    `<section id="logs"><h2>Logs</h2>` +
    `<div class="toolbar"><select id="log-container">${options}</select>` +
    `<label><input type="checkbox" id="log-previous"${tail.previous ? " checked" : ""}> previous</label>` +
    `<input id="log-search" type="search" placeholder="search" value="${esc(tail.search)}"></div>` +
    `<pre id="log"></pre></section>`
  );
}

// A container's log, followed as it grows.
class LogTail {
  constructor(namespace, name, container) {
    this.pod = `${namespace}/${name}`;
    this.namespace = namespace;
    this.name = name;
    this.container = container;
    this.previous = false;
    this.search = "";
    this.lines = [];
    this.start();
  }

  start() {
    this.controller?.abort();
    this.controller = new AbortController();
    this.lines = [];
    const query = new URLSearchParams({ container: this.container, tailLines: "1000" });
    if (this.previous) query.set("previous", "true");
    else query.set("follow", "true");
    const path = `k8s/api/v1/namespaces/${this.namespace}/pods/${this.name}/log?${query}`;
    (async () => {
      try {
        for await (const line of lines(path, this.controller.signal)) {
          this.lines.push(line);
          if (this.lines.length > 5000) this.lines.shift();
          this.show();
        }
      } catch (e) {
        if (e.name !== "AbortError") {
          this.lines.push(`(${e.message})`);
          this.show();
        }
      }
    })();
    this.show();
  }

  stop() {
    this.controller?.abort();
  }

  show() {
    const pre = document.getElementById("log");
    if (!pre) return;
    const wanted = this.search.toLowerCase();
    const shown = wanted ? this.lines.filter((l) => l.toLowerCase().includes(wanted)) : this.lines;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = shown.join("\n");
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
}

// ---- one service: its traffic --------------------------------------------

function serviceView(namespace, name) {
  const s = find("services", namespace, name);
  if (!s) return `<p class="muted">Service ${esc(namespace)}/${esc(name)} is not there (yet).</p>`;
  const selector = s.spec.selector ?? {};
  const selected = all("pods").filter(
    (p) => ns(p) === namespace && Object.keys(selector).length > 0 &&
      Object.entries(selector).every(([k, v]) => p.metadata.labels?.[k] === v),
  );
  return (
    `<h1>Service ${esc(namespace)}/${esc(name)}</h1>` +
    (serviceUrl(s) ? `<p><a href="${esc(serviceUrl(s))}" target="_blank" rel="noopener">${esc(serviceUrl(s))}</a></p>` : "") +
    `<section id="traffic"><h2>Requests (last hour)</h2><div class="charts" data-series="service=${esc(namespace)}/${esc(name)}"></div></section>` +
    section("endpoints", "Pods", table(["Namespace", "Name", "Ready", "Status", "Restarts", "Age", "Node", "Runtime", ""], podRows(selected), "No pods selected."))
  );
}

// ---- images -----------------------------------------------------------------

let images = null;
function imagesView() {
  if (images === null) {
    images = [];
    get("dash/images").then((list) => {
      images = list;
      rerender();
    }, (e) => {
      notice = e.message;
      rerender();
    });
  }
  const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
  const users = (name) =>
    all("pods")
      .filter((p) => [...(p.spec.initContainers ?? []), ...p.spec.containers].some((c) => sameImage(c.image, name)))
      .map((p) => link(`#/pod/${ns(p)}/${p.metadata.name}`, p.metadata.name))
      .join(", ");
  const rows = images.map((i) => [
    esc(i.name),
    esc(bytes(i.size)),
    esc(i.layers),
    `<code>${esc(i.digest.slice(0, 19))}</code>`,
    users(i.name),
  ]);
  return `<h1>Images</h1>` + table(["Name", "Size", "Layers", "Digest", "Used by"], rows, "The local store is empty.");
}

function sameImage(ref, name) {
  const full = ref.includes(":") || ref.includes("@") ? ref : `${ref}:latest`;
  return full === name || full.endsWith(`/${name}`) || name.endsWith(`/${full}`);
}

// ---- routing and rendering ---------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
  return parts;
}

let whole = false;
let signedOut = false;
whenSignedOut(() => {
  signedOut = true;
  rerender();
});

function render() {
  if (signedOut) {
    main.innerHTML =
      `<p class="notice">Not signed in, or the session ended. Run <code>berth dashboard</code> for a sign-in link.</p>`;
    return;
  }
  const [view, namespace, name] = route();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", (a.dataset.nav === "images") === (view === "images"));
  }
  namespaceChoices();
  connection.textContent = feed.error ? `reconnecting: ${feed.error.message}` : "live";
  // What the user is typing in survives the redraw.
  const active = document.activeElement;
  const focused = active?.id;
  const typing = active?.dataset?.scale ? { key: active.dataset.scale, value: active.value } : null;
  const scroll = window.scrollY;
  let html;
  if (view === "pod") html = podView(namespace, name);
  else if (view === "service") html = serviceView(namespace, name);
  else if (view === "images") html = imagesView();
  else html = overview();
  if (view !== "pod" && tail) {
    tail.stop();
    tail = null;
  }
  rendering = true;
  main.innerHTML = html;
  if (tail) tail.show();
  if (focused) document.getElementById(focused)?.focus();
  if (typing) {
    const input = [...main.querySelectorAll("input[data-scale]")].find((i) => i.dataset.scale === typing.key);
    if (input) {
      input.value = typing.value;
      input.focus();
    }
  }
  rendering = false;
  window.scrollTo(0, scroll);
  // A mark for the first frame showing every list (bench/dashboard reads
  // it): a task queued from the frame's callback runs after its paint.
  if (!whole && feed.listed.size === RESOURCES.length) {
    whole = true;
    requestAnimationFrame(() => setTimeout(() => performance.mark("berth:whole")));
  }
  for (const holder of main.querySelectorAll(".charts")) charts(holder);
}

// Charts stay across renders (the page is redrawn on every change): each
// is kept by its series and moved into the new page.
const drawn = new Map();
function charts(holder) {
  const series = holder.dataset.series;
  let kept = drawn.get(series);
  if (!kept) {
    kept = chart(series);
    drawn.set(series, kept);
  }
  holder.replaceWith(kept.element);
  kept.element.classList.add("charts");
}

window.addEventListener("hashchange", () => {
  notice = "";
  focus = null;
  const asked = new URLSearchParams(location.hash.split("?")[1] ?? "").get("namespace");
  if (asked !== null) {
    narrowed = asked;
    localStorage.setItem("berth.namespace", asked);
  }
  render();
});

// ---- actions ---------------------------------------------------------------

const scalePath = (kind, namespace, name) => {
  const group = kind === "deployments" || kind === "statefulsets" ? "apis/apps/v1" : "api/v1";
  return `k8s/${group}/namespaces/${namespace}/${kind}/${name}`;
};

const actions = {
  async scale(kind, namespace, name, replicas) {
    replicas = Math.max(0, replicas);
    await mergePatch(`${scalePath(kind, namespace, name)}/scale`, { spec: { replicas } });
    return [`scaled ${kind.slice(0, -1)} ${name} to ${replicas}`, namespace, name];
  },
  async restart(kind, namespace, name) {
    await mergePatch(scalePath(kind, namespace, name), {
      spec: { template: { metadata: { annotations: { "kubectl.kubernetes.io/restartedAt": new Date().toISOString() } } } },
    });
    return [`restarted ${kind.slice(0, -1)} ${name}`, namespace, name];
  },
  async history(namespace, name) {
    const d = find("deployments", namespace, name);
    const owned = all("replicasets")
      .filter((r) => ns(r) === namespace && (r.metadata.ownerReferences ?? []).some((o) => o.uid === d?.metadata.uid))
      .map((r) => ({ r, revision: Number(r.metadata.annotations?.["deployment.kubernetes.io/revision"] ?? 0) }))
      .sort((a, b) => b.revision - a.revision);
    const rows = owned.map(({ r, revision }) => [
      esc(revision),
      esc(r.spec.template.spec.containers.map((c) => c.image).join(", ")),
      esc(age(r.metadata.creationTimestamp)),
      revision === owned[0]?.revision ? "current" : button("rollback", "Roll back to this", [namespace, name, r.metadata.name]),
    ]);
    dialog(`Revisions of ${name}`, table(["Revision", "Images", "Age", ""], rows, "No revisions."));
    return null;
  },
  async rollback(namespace, name, replicaset) {
    const r = find("replicasets", namespace, replicaset);
    const template = structuredClone(r.spec.template);
    delete template.metadata?.labels?.["pod-template-hash"];
    await call("PATCH", scalePath("deployments", namespace, name),
      [{ op: "replace", path: "/spec/template", value: template }], "application/json-patch+json");
    closeDialog();
    return [`rolled ${name} back to revision ${r.metadata.annotations?.["deployment.kubernetes.io/revision"]}`, namespace, name];
  },
  async "delete-pod"(namespace, name) {
    await call("DELETE", `k8s/api/v1/namespaces/${namespace}/pods/${name}`);
    return [`deleted pod ${name}`, namespace, name];
  },
  async suspend(namespace, name, suspend) {
    await mergePatch(`k8s/apis/batch/v1/namespaces/${namespace}/cronjobs/${name}`, { spec: { suspend } });
    return [`${suspend ? "suspended" : "resumed"} cronjob ${name}`, namespace, name];
  },
  async trigger(namespace, name) {
    const c = find("cronjobs", namespace, name);
    const job = {
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: {
        name: `${name}-manual-${Math.floor(Date.now() / 1000) % 100000}`,
        namespace,
        annotations: { "cronjob.kubernetes.io/instantiate": "manual" },
        labels: c.spec.jobTemplate.metadata?.labels,
        ownerReferences: [{ apiVersion: "batch/v1", kind: "CronJob", name, uid: c.metadata.uid, controller: true }],
      },
      spec: c.spec.jobTemplate.spec,
    };
    await call("POST", `k8s/apis/batch/v1/namespaces/${namespace}/jobs`, job);
    return [`started job ${job.metadata.name}`, namespace, name];
  },
  async reveal(key) {
    if (revealed.has(key)) {
      revealed.delete(key);
    } else {
      const [namespace, name] = key.split("/");
      const secret = await get(`k8s/api/v1/namespaces/${namespace}/secrets/${name}`);
      revealed.set(key, secret.data ?? {});
    }
    rerender();
    return null;
  },
  async unfocus() {
    focus = null;
    rerender();
    return null;
  },
};

async function act(action, args) {
  try {
    const done = await actions[action](...args);
    if (done) {
      const [what, namespace, name] = done;
      focus = { action: what, what: name, namespace, name };
      notice = "";
    }
  } catch (e) {
    notice = e instanceof ApiError ? `${action}: ${e.message}` : `${action}: ${e}`;
  }
  rerender();
}

document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-action]");
  if (!target) return;
  event.preventDefault();
  act(target.dataset.action, JSON.parse(target.dataset.args));
});

document.addEventListener("change", (event) => {
  const t = event.target;
  if (t.id === "log-container" || t.id === "log-previous") {
    tail.container = document.getElementById("log-container").value;
    tail.previous = document.getElementById("log-previous").checked;
    tail.start();
  }
});

// A replica count typed in is made so when the field is left or Enter
// pressed (not on "change": the page is redrawn as it goes, and a redrawn
// field has no memory of its value before the edit).
let rendering = false;
function commitScale(input) {
  const [kind, namespace, name] = JSON.parse(input.dataset.scale);
  const wanted = Number(input.value);
  const current = find(kind, namespace, name)?.spec.replicas ?? 1;
  if (input.value !== "" && Number.isInteger(wanted) && wanted !== current) {
    act("scale", [kind, namespace, name, wanted]);
  }
}
document.addEventListener("focusout", (event) => {
  if (!rendering && event.target.dataset?.scale) commitScale(event.target);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.dataset?.scale) commitScale(event.target);
});

document.addEventListener("input", (event) => {
  if (event.target.id === "log-search" && tail) {
    tail.search = event.target.value;
    tail.show();
  }
});

function dialog(title, html) {
  closeDialog();
  const box = document.createElement("dialog");
  box.id = "dialog";
  box.innerHTML = `<h2>${esc(title)}</h2>${html}<p><button id="dialog-close">Close</button></p>`;
  document.body.append(box);
  box.querySelector("#dialog-close").addEventListener("click", closeDialog);
  box.showModal();
}

function closeDialog() {
  document.getElementById("dialog")?.remove();
}

render();
// Ages move on though nothing changes.
setInterval(rerender, 10000);
