"""Small helpers the tests share: a real server in a subprocess, waiting on conditions, /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pericles.model import TERMINAL, status_of

T = TypeVar("T")

PYTHON = sys.executable
#: When set, servers started here keep their records in a new sqlite file in this directory.
SQLITE_DIR_ENV = "PERICLES_TESTS_SQLITE_DIR"
#: When set (a redis:// URL), servers started here use it as store and run payloads on the
#: celery workers of that broker.
CLUSTER_ENV = "PERICLES_TESTS_REDIS_URL"
_STARTED = re.compile(r"Uvicorn running on (https?)://\S+:(\d+)")


def _installed(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise RuntimeError(f"{name} is not installed beside this Python")
    return path


def handler_serve() -> str:
    return _installed("handler-serve")


def pericles_path() -> str:
    """The `pericles` command installed beside this Python."""
    return _installed("pericles")


def run_serve(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run handler-serve expecting it to stop by itself; the environment has no PERICLES_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    return subprocess.run(
        [handler_serve(), "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def wait_until(predicate: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def release(fifo: Path, timeout: float = 10.0) -> None:
    """Write a line into `fifo` once its reader has it open, letting that reader go on."""

    def open_writer() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody has it open for reading yet
            return None

    fd = wait_until(open_writer, timeout, f"a reader on {fifo}")
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def release_all(fifo: Path, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let every reader of `fifo` go on until `done()`: one writer's close gives every reader
    that has the FIFO open at that moment its line or EOF, so readers that open it later need
    another round; each round writes to whoever has it open."""

    def one_round() -> bool:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader has it open right now
            return done()
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        return done()

    wait_until(one_round, timeout, f"every reader of {fifo} to go on")


def post(client: httpx.Client, cmd: str, *params: str, **fields: Any) -> dict[str, Any]:
    """Create a payload running `cmd params...` with extra spec `fields`; its pending record."""
    response = client.post("/payloads", json={"cmd": cmd, "params": list(params), **fields})
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/payloads/{record['id']}"
    return record


def post_many(port: int, body: bytes, count: int, connections: int = 8, depth: int = 16) -> int:
    """POST `body` to /payloads `count` times over pipelined keep-alive connections.

    Much cheaper for the test process than an HTTP client library, so a test can create
    tens of thousands of payloads quickly. Returns how many answers were 201.
    """
    request = (
        b"POST /payloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def one_connection(n: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        created = 0
        try:
            for start in range(0, n, depth):
                batch = min(depth, n - start)
                writer.write(request * batch)
                await writer.drain()
                for _ in range(batch):
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    assert length is not None
                    await reader.readexactly(int(length.group(1)))
                    created += head.startswith(b"HTTP/1.1 201")
        finally:
            writer.close()
        return created

    async def run() -> int:
        shares = [count // connections + (i < count % connections) for i in range(connections)]
        return sum(await asyncio.gather(*(one_connection(n) for n in shares)))

    return asyncio.run(run())


def server_rss(pid: int) -> int:
    """A process's resident set size in bytes, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def is_terminal(record: Mapping[str, Any]) -> bool:
    return status_of(str(record["status"])) in TERMINAL


def wait_for_status(
    client: httpx.Client, payload_id: str, status: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """The record once it has `status` (or once terminal when `status` is None)."""

    def check() -> dict[str, Any] | None:
        record: dict[str, Any] = client.get(f"/payloads/{payload_id}").json()
        done = is_terminal(record) if status is None else record["status"] == status
        return record if done else None

    return wait_until(check, timeout, f"payload {payload_id} to be {status or 'terminal'}")


@dataclass
class Server:
    """A real `handler-serve` process on a free loopback port."""

    process: subprocess.Popen[str]
    port: int
    log_lines: list[str]
    reader: threading.Thread
    scheme: str = "http"
    #: What clients verify the server's certificate with (an SSLContext for a test CA).
    verify: ssl.SSLContext | bool = True
    headers: Mapping[str, str] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("headers", self.headers)
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)

    def log(self) -> str:
        return "".join(self.log_lines)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            tail = "".join(self.log_lines[-40:])
            raise AssertionError(
                f"server did not stop within {timeout}s; its log:\n{tail}"
            ) from None
        finally:
            self.reader.join(timeout)
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_server(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    verify: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
    wrap: Sequence[str] = (),
) -> Server:
    """Start `handler-serve` on port 0 and return once it answers /healthz.

    `verify` and `headers` (e.g. an Authorization header) are the defaults of its clients.
    `wrap` is a command that execs the server (e.g. `prlimit ... --`), keeping its pid.
    """
    full_env = {**os.environ, **(env or {})}
    argv = [*wrap, handler_serve(), *args]
    if "PERICLES_PORT" not in full_env and "--port" not in args:
        argv += ["--port", "0"]
    sqlite_dir = full_env.pop(SQLITE_DIR_ENV, None)
    if sqlite_dir and "PERICLES_STORE" not in full_env and "--store" not in args:
        argv += ["--store", f"sqlite:///{Path(sqlite_dir) / uuid.uuid4().hex}.db"]
    redis_url = full_env.pop(CLUSTER_ENV, None)
    if redis_url and "PERICLES_STORE" not in full_env and "--store" not in args:
        argv += ["--store", redis_url, "--runner", "celery"]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    lines: list[str] = []
    port_found = threading.Event()
    found: list[tuple[str, int]] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = _STARTED.search(line)
            if match:
                found.append((match.group(1), int(match.group(2))))
                port_found.set()
        port_found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if not port_found.wait(timeout) or not found:
        process.kill()
        process.wait()
        reader.join(timeout)
        raise RuntimeError("server did not start:\n" + "".join(lines))
    scheme, port = found[0]
    server = Server(process, port, lines, reader, scheme, verify, headers)
    with server.client() as client:
        wait_until(lambda: _healthy(client), timeout, "the server to answer /healthz")
    return server


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def running_server(
    *args: str,
    env: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    server = start_server(*args, env=env, verify=verify, headers=headers)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    ppid: int
    pgrp: int


def processes() -> list[ProcInfo]:
    """Every process visible in /proc, with its state, parent and process group."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        found.append(ProcInfo(int(entry), fields[0], int(fields[1]), int(fields[2])))
    return found


def group_members(pgrp: int) -> list[ProcInfo]:
    return [p for p in processes() if p.pgrp == pgrp]


def zombie_children(pid: int) -> list[ProcInfo]:
    return [p for p in processes() if p.ppid == pid and p.state == "Z"]


@dataclass
class SSEvent:
    id: str | None
    event: str
    data: str


def sse_events(lines: Iterator[str]) -> Iterator[SSEvent]:
    """Parse Server-Sent Events from an iterator of lines (without their line ends)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SSEvent(fields.get("id"), fields.get("event", "message"), "\n".join(data))
            fields, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
