// The Kubernetes API as the dashboard reaches it: berth serves it under
// `k8s/` beside the page, authenticated by the session cookie. Every call
// carries the dashboard's header: a page of another origin cannot send it
// (it would need a CORS preflight berth never answers), so no other site
// can act with the session.

const HEADERS = { "X-Berth-Dashboard": "1" };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onSignedOut = () => {};
export function whenSignedOut(f) {
  onSignedOut = f;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const status = JSON.parse(await response.text());
    if (status.message) message = status.message;
  } catch (_) {
    // Not a Status: the status line says it.
  }
  if (response.status === 401) onSignedOut();
  return new ApiError(response.status, message);
}

export async function call(method, path, body, contentType = "application/json") {
  const init = { method, headers: { ...HEADERS }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = contentType;
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => call("GET", path);
export const mergePatch = (path, patch) =>
  call("PATCH", path, patch, "application/merge-patch+json");

// Lines of a streamed response as they come, until it ends or `signal`
// aborts it.
export async function* lines(path, signal) {
  const response = await fetch(path, { headers: HEADERS, credentials: "same-origin", signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, end);
      pending = pending.slice(end + 1);
    }
  }
  if (pending) yield pending;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Every list the page shows, kept current over one response (berth lists
// and watches each kind, as client-go's informers do, and writes what
// changes as lines): a browser has six connections to a host, and a watch
// per kind would hold them all. On the feed's end, it is asked for again.
export class Feed {
  constructor(resources, changed) {
    this.resources = resources;
    this.lists = Object.fromEntries(resources.map((r) => [r, new Map()]));
    // The kinds listed at least once: the page is whole when all are.
    this.listed = new Set();
    this.error = null;
    this.changed = changed;
    this.run();
  }

  static key(o) {
    return `${o.metadata.namespace ?? ""}/${o.metadata.name}`;
  }

  list(resource) {
    return [...this.lists[resource].values()];
  }

  get(resource, namespace, name) {
    return this.lists[resource].get(`${namespace}/${name}`);
  }

  async run() {
    for (;;) {
      try {
        const path = `dash/feed?resources=${this.resources.join(",")}`;
        for await (const line of lines(path)) {
          if (!line.trim()) continue;
          const message = JSON.parse(line);
          const list = this.lists[message.resource];
          if (!list) continue;
          if (message.type === "LIST") {
            this.listed.add(message.resource);
            list.clear();
            for (const o of message.items ?? []) list.set(Feed.key(o), o);
          } else if (message.type === "ADDED" || message.type === "MODIFIED") {
            list.set(Feed.key(message.object), message.object);
          } else if (message.type === "DELETED") {
            list.delete(Feed.key(message.object));
          } else {
            continue;
          }
          this.error = null;
          this.changed();
        }
        this.error = new Error("the feed ended");
      } catch (e) {
        this.error = e;
        if (e.status === 401) {
          this.changed();
          return;
        }
      }
      this.changed();
      await sleep(1000);
    }
  }
}
