"""Helpers the benchmarks under bench/ share: building berth, starting and
stopping servers, timing the first 200 OK, and recording a section of
BENCHMARKS.md."""

import os
import re
import socket
import subprocess
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
