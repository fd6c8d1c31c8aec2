"""The many-machines parts for tests: a real `redis-server` and real `pericles worker`s.

Each is a child process of the test run on a free loopback port, stopped (and killed, by its
pid, if it does not stop) when the test or module that started it is done.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
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
    #: Addresses it listens on besides 127.0.0.1 (e.g. the root side of `NetHost`s' links).
    also_bind: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0, address: str = "127.0.0.1") -> str:
        return f"redis://{address}:{self.port}/{db}"

    def start(self) -> RedisServer:
        argv = [
            redis_server_path(),
            "--bind",
            "127.0.0.1",
            *self.also_bind,
            # Protected mode refuses clients from other than loopback when there is no
            # password; the extra addresses are private links to this test's namespaces.
            "--protected-mode",
            "no" if self.also_bind else "yes",
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
    wrap: Sequence[str] = (),
) -> Worker:
    """Start `pericles worker` and return once it consumes its queues.

    `wrap` is a command that execs the worker, keeping its pid (e.g. `NetHost.run`).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERICLES_")}
    argv = [
        *wrap,
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


# -- hosts as network namespaces ---------------------------------------------------------

#: The Debian package of the `ip` command.
IPROUTE_PACKAGE = "iproute2"
#: Where the links' /30s are picked (at random, clear of every address and route here).
LINK_RANGE = ipaddress.IPv4Network("10.213.0.0/16")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


@functools.cache
def netns_missing() -> str | None:
    """Why this test run cannot make network namespaces, in one line; None when it can.

    Tried once: `ip netns add` needs the `ip` command, root (CAP_SYS_ADMIN and CAP_NET_ADMIN)
    and a kernel with network namespaces.
    """
    if shutil.which("ip") is None:
        return f"the multi-host test needs `ip`: install the Debian package {IPROUTE_PACKAGE}"
    name = f"pericles-probe-{secrets.token_hex(4)}"
    added = _ip("netns", "add", name)
    if added.returncode != 0:
        reason = added.stderr.strip().splitlines()[-1:] or ["failed"]
        return (
            f"the multi-host test needs `ip netns add` (root, CAP_SYS_ADMIN): {reason[0]}; "
            "run the tests as root"
        )
    _ip("netns", "delete", name)
    return None


def _taken() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this host's addresses and routes, to keep clear of."""
    taken = []
    words = _ip("-o", "-4", "addr").stdout.split() + _ip("-4", "route").stdout.split()
    for word in words:
        with contextlib.suppress(ValueError):
            if "/" in word or word.count(".") == 3:
                taken.append(ipaddress.IPv4Network(word, strict=False))
    return taken


def free_links(count: int) -> list[ipaddress.IPv4Network]:
    """`count` /30s of `LINK_RANGE` that overlap no address or route of this host."""
    taken = _taken()
    subnets = list(LINK_RANGE.subnets(new_prefix=30))
    chosen: list[ipaddress.IPv4Network] = []
    for subnet in random.sample(subnets, 64):
        if not any(subnet.overlaps(net) for net in [*taken, *chosen]):
            chosen.append(subnet)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no free /30 in {LINK_RANGE} for {count} links")


@dataclass
class NetHost:
    """A network namespace standing for a host: a veth pair from the root namespace, with
    the root side (`gateway`) and the namespace side (`address`, on `interface`) in a /30
    of their own. Redis listens on the gateway; nothing else connects the hosts."""

    name: str
    interface: str
    outside: str
    gateway: str
    address: str

    @property
    def run(self) -> list[str]:
        """The command prefix that runs a program in this host's namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        steps = [
            ("netns", "add", self.name),
            ("link", "add", self.outside, "type", "veth", "peer", "name", self.interface),
            ("link", "set", self.interface, "netns", self.name),
            ("addr", "add", f"{self.gateway}/30", "dev", self.outside),
            ("link", "set", self.outside, "up"),
            ("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.interface),
            ("-n", self.name, "link", "set", self.interface, "up"),
            ("-n", self.name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise RuntimeError(f"ip {' '.join(step)}: {done.stderr.strip()}")

    def remove(self) -> None:
        """Kill what is left in the namespace (only this test's processes run in it: its
        name is new), then delete it and the link (deleting either end removes both)."""
        for word in _ip("netns", "pids", self.name).stdout.split():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(word), signal.SIGKILL)
        _ip("netns", "delete", self.name)
        _ip("link", "delete", self.outside)


@contextmanager
def network_hosts(count: int) -> Iterator[list[NetHost]]:
    """`count` new network namespaces linked to this one; removed at the end, whatever
    happened (also when creating one failed half-way)."""
    token = secrets.token_hex(3)
    hosts: list[NetHost] = []
    try:
        for i, link in enumerate(free_links(count)):
            gateway, address = (str(a) for a in link.hosts())
            # Interface names: 15 characters at most.
            host = NetHost(
                f"pericles-{token}-{i}", f"pc{token}{i}i", f"pc{token}{i}o", gateway, address
            )
            hosts.append(host)
            host.create()
        yield hosts
    finally:
        for host in hosts:
            host.remove()
