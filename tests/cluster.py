"""The many-machines parts for tests: a real `redis-server` and real `pericles worker`s.

Each is a child process of the test run on a free loopback port, stopped (and killed, by its
pid, if it does not stop) when the test or module that started it is done.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import wait_until

#: Every store the suite runs against. A module may narrow it with its own `STORES`.
STORES = ("memory", "sqlite")
#: The many-machines configuration: a Redis store and payloads run by a celery worker. A
#: module joins it with `STORES = WITH_CLUSTER`.
CLUSTER = "celery"
WITH_CLUSTER = (*STORES, CLUSTER)

#: The Debian package the tests need; `make test` installs it when missing.
REDIS_PACKAGE = "redis-server"


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            f"redis-server is not installed: install the Debian package {REDIS_PACKAGE} "
            "(make test does, as root)"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A `redis-server` with its own directory, appending every write to its AOF."""

    directory: Path
    port: int = field(default_factory=free_port)
    #: Redis's default: the AOF is written before each answer and flushed to disk every
    #: second, so a killed redis-server loses nothing it answered (a power cut: up to 1 s).
    fsync: str = "everysec"
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        argv = [
            redis_server_path(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.fsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        wait_until(lambda: _answers(self.port), 10, f"redis-server on port {self.port}")
        return self

    def flush(self) -> None:
        """Empty every database."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(16).startswith(b"+OK")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


def pericles_cli() -> str:
    path = shutil.which("pericles", path=str(Path(sys.executable).parent))
    if path is None:
        raise RuntimeError("pericles is not installed beside this Python")
    return path


@dataclass
class Worker:
    """A `pericles worker` process."""

    process: subprocess.Popen[str]
    hostname: str
    lines: list[str]
    reader: threading.Thread

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_worker(
    broker: str,
    *args: str,
    hostname: str = "host-a",
    queues: str = "default",
    slots: int = 16,
    ttl: float = 2.0,
    timeout: float = 30.0,
) -> Worker:
    """Start `pericles worker` and return once it consumes its queues."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    argv = [
        pericles_cli(),
        "worker",
        "--broker",
        broker,
        "--queues",
        queues,
        "--slots",
        str(slots),
        "--hostname",
        hostname,
        # A dead worker's payloads are found lost within about `ttl` s (the default is 5 s).
        "--liveness-ttl",
        str(ttl),
        *args,
    ]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    ready, started = threading.Event(), threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "pericles worker ready" in line:
                started.set()
                ready.set()
        ready.set()  # its output ended: it stopped before it was ready

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    worker = Worker(process, hostname, lines, reader)
    if not ready.wait(timeout) or not started.is_set() or process.poll() is not None:
        worker.stop(signal.SIGKILL)
        raise RuntimeError("worker did not start:\n" + "".join(lines))
    return worker
