"""Servers under test, run as subprocesses on free loopback ports, and what /proc says of them.

A server is started on port 0. uvicorn logs the port it bound ("Uvicorn running on
http://127.0.0.1:PORT"); granian logs port 0, so for it the port is read from the listening
socket its processes hold (/proc/net/tcp). Readiness is `GET /healthz` answering 200 before a
deadline. Stopping is SIGTERM, a bounded wait, then SIGKILL.

The server's stdout and stderr (its access log and lifecycle lines) go to a temporary file,
as they would to a file or journald in production: reading them through a pipe would cost
the load generator, which shares the machine, a thread and CPU.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent

_UVICORN_LINE = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
_STOP_GRACE = 10.0


class ServerFailed(RuntimeError):
    """The server did not come up, or died; the message carries its last log lines."""


def handler_serve_argv() -> list[str]:
    """The real Pericles server, as users start it."""
    return [str(VENV_BIN / "handler-serve"), "--port", "0"]


def hello_serve_argv() -> list[str]:
    """The hello app behind `handler-serve`'s own entry point: same uvicorn config and logging."""
    return [sys.executable, str(BENCH_DIR / "hello_serve.py"), "--port", "0"]


def uvicorn_argv(target: str, *, access_log: bool = True) -> list[str]:
    """uvicorn with the options `handler-serve` passes (see `pericles.cli.serve`)."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        HOST,
        "--port",
        "0",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-server-header",
        "--log-level",
        "info",
        "--timeout-graceful-shutdown",
        "3",
    ]
    if not access_log:
        argv.append("--no-access-log")
    return argv


def granian_argv(target: str, *, access_log: bool = False) -> list[str]:
    """granian serving an ASGI app on uvloop with one worker."""
    argv = [
        str(VENV_BIN / "granian"),
        "--interface",
        "asgi",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--host",
        HOST,
        "--port",
        "0",
        "--working-dir",
        str(BENCH_DIR),
    ]
    if access_log:
        argv.append("--access-log")
    return [*argv, target]


class ServerProcess:
    """One server subprocess. Use `start()` as a context manager: it stops the server on exit."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerFailed(f"{self.name} is not running")
        return self._proc.pid

    @property
    def worker_pid(self) -> int:
        """The process that runs the app: granian's worker, or the server itself."""
        if "granian" in Path(self.argv[0]).name:
            workers = children(self.pid)
            if workers:
                return workers[0]
        return self.pid

    @contextlib.contextmanager
    def start(self, timeout: float = 30.0) -> Iterator[ServerProcess]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        fd, name = tempfile.mkstemp(prefix=f"bench-{self.name.replace('/', '-')}-", suffix=".log")
        self._log = Path(name)
        try:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=fd,
                    env=env,
                    cwd=BENCH_DIR.parent,
                )
            finally:
                os.close(fd)
            deadline = time.monotonic() + timeout
            self.port = self._wait_port(deadline)
            self._wait_healthy(deadline)
            yield self
        finally:
            self._stop()
            self._log.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote."""
        if self._log is None or not self._log.exists():
            return ""
        with self._log.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 200 * lines))
            text = log.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_port(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            self._check_alive()
            port = self._logged_port()
            if port:
                return port
            # granian logs port 0, and a quieter log level hides uvicorn's line.
            ports = listening_ports(self.pid)
            if ports:
                return ports[0]
            time.sleep(0.05)
        raise self._failure("no listening port before the deadline")

    def _logged_port(self) -> int:
        if self._log is None:
            return 0
        # The startup line comes within the first few lines of the log.
        with self._log.open("rb") as log:
            match = _UVICORN_LINE.search(log.read(65536).decode(errors="replace"))
        return int(match.group(1)) if match else 0

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        raise self._failure("/healthz did not answer 200 before the deadline")

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise self._failure(f"exited with status {self._proc.returncode}")

    def _failure(self, what: str) -> ServerFailed:
        return ServerFailed(f"{self.name} ({' '.join(self.argv)}): {what}\n{self.log_tail()}")

    def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            print(f"{self.name}: no exit {_STOP_GRACE:.0f}s after SIGTERM, killing", flush=True)
            proc.kill()
            proc.wait(timeout=_STOP_GRACE)


# --- /proc -------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """The resident set size of `pid` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ServerFailed(f"no VmRSS for pid {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds used by `pid` itself (user + system) and by its reaped children."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # Fields 14 to 17 of proc(5), counted from 3 after the command name.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def system_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (not idle, not waiting on I/O)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(value) for value in fields]
    idle, iowait = ticks[3], ticks[4]
    # guest time is already counted in user time.
    return (sum(ticks[:8]) - idle - iowait) / _TICK


def children(pid: int) -> list[int]:
    """The direct children of `pid`."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def listening_ports(pid: int) -> list[int]:
    """TCP ports on 127.0.0.1 that `pid` or its children listen on."""
    inodes = _socket_inodes(pid)
    for child in children(pid):
        inodes |= _socket_inodes(child)
    ports: list[int] = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        # 0A is LISTEN; 0100007F is 127.0.0.1 in the kernel's little-endian hex.
        if state == "0A" and inode in inodes and local.startswith("0100007F:"):
            ports.append(int(local.split(":")[1], 16))
    return ports
