"""Helpers the benchmarks under bench/ share: building berth, starting and
stopping servers, timing the first 200 OK, and recording a section of
BENCHMARKS.md."""

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BERTH = os.path.join(ROOT, "target/release/berth")
GUESTS = os.path.join(ROOT, "guests/target/wasm32-wasip2/release")


def build(*guests, packages=()):
    """Release builds of berth (and the workspace `packages` named) and of
    the named guests."""
    crates = ["berth", "berth-linux", *packages]
    subprocess.run(["cargo", "build", "--release", *[a for c in crates for a in ("-p", c)]],
                   cwd=ROOT, check=True)
    for guest in guests:
        subprocess.run(["cargo", "build", "--release", "-p", guest], cwd=os.path.join(ROOT, "guests"), check=True)


def cpu_model():
    """The CPU's model name, as /proc/cpuinfo gives it, for the machine line
    every recorded section carries."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_first_ok(port, proc, timeout=60.0):
    """Polls with raw HTTP/1.1 (no client library overhead) until the server
    on `port` answers 200; returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - start
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before answering")
            time.sleep(0.0002)
    raise RuntimeError(f"port {port} not answering 200 after {timeout}s")


def berth_run_to_first_ok(target, home):
    """Milliseconds from exec of `berth run TARGET` to its first 200 OK."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [BERTH, "run", target, "--listen", f"127.0.0.1:{port}"],
        env=dict(os.environ, BERTH_HOME=home, RUST_LOG="warn"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_first_ok(port, proc)
        return (time.perf_counter() - start) * 1000
    finally:
        stop(proc)


class KeepAlive:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:`port`, raw (no
    client library between the clock and the socket), timing each GET."""

    def __init__(self, port, host):
        self.port = port
        self.host = host
        self.conn = None

    def reset(self):
        self.conn = None

    def get(self, path="/"):
        """Microseconds for `GET path` to a whole 200 response."""
        if self.conn is None:
            self.conn = socket.create_connection(("127.0.0.1", self.port))
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter_ns()
        self.conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace") + body.decode(errors="replace"))
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")]
        if lengths:
            while len(body) < lengths[0]:
                body += self.conn.recv(4096)
        else:
            # Chunked: the last chunk is empty.
            while not body.endswith(b"0\r\n\r\n"):
                body += self.conn.recv(4096)
        return (time.perf_counter_ns() - start) / 1000


def record(name, section):
    """Replaces the `name` section of BENCHMARKS.md (or appends it)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nFigures recorded by the scripts under `bench/`; each run replaces its own section.\n"
    section = f"<!-- {name}:start -->\n{section.strip()}\n<!-- {name}:end -->"
    pattern = rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->"
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    open(path, "w").write(text)
    print(f"wrote {path}")


def tar_entry(tar, path, kind, mode, data=b"", link=""):
    """Adds one entry to `tar` with mtime 0, so the same bytes make the
    same digest every run."""
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data) if data else None)


def host_binaries_layer(binaries):
    """A layer of this machine's `binaries` and the shared libraries they
    load (by ldd), each at its path here, and a /tmp."""
    files = set(binaries)
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            words = line.split("=>", 1)[-1].split()
            if words and words[0].startswith("/"):
                files.add(words[0])
    out = io.BytesIO()
    dirs = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar_entry(tar, "tmp/", tarfile.DIRTYPE, 0o1777)
        for path in sorted(files):
            relative = path.lstrip("/")
            parents = []
            parent = os.path.dirname(relative)
            while parent and parent not in dirs:
                dirs.add(parent)
                parents.append(parent)
                parent = os.path.dirname(parent)
            for d in reversed(parents):
                tar_entry(tar, d + "/", tarfile.DIRTYPE, 0o755)
            with open(path, "rb") as f:
                tar_entry(tar, relative, tarfile.REGTYPE, 0o755, f.read())
    return out.getvalue()


def oci_archive(layers, config, name, name_annotation="org.opencontainers.image.ref.name"):
    """An OCI archive (a tar of an OCI layout) of a linux/amd64 image of
    `layers` (tars) and `config` (the config's `config` object), tagged
    `name` in `name_annotation`: the OCI ref name `berth load -i` reads, or
    `io.containerd.image.name` for `ctr import`."""
    def digest(data):
        return "sha256:" + hashlib.sha256(data).hexdigest()

    image_config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(layer) for layer in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(image_config), "size": len(image_config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(layer), "size": len(layer)} for layer in layers],
    }).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest),
            "size": len(manifest),
            "annotations": {name_annotation: name},
        }],
    }).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar_entry(tar, "oci-layout", tarfile.REGTYPE, 0o644, b'{"imageLayoutVersion":"1.0.0"}')
        tar_entry(tar, "index.json", tarfile.REGTYPE, 0o644, index)
        for blob in (*layers, image_config, manifest):
            tar_entry(tar, f"blobs/sha256/{digest(blob)[len('sha256:'):]}", tarfile.REGTYPE, 0o644, blob)
    return out.getvalue()
