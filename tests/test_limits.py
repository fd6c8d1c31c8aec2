"""Resource limits bite on real processes; the server's caps bound what a client asks; usage."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.cluster import WITH_CLUSTER
from tests.helpers import PYTHON, post, running_server, wait_for_status

STORES = WITH_CLUSTER

MiB = 1024 * 1024


def test_a_memory_hog_is_stopped(client: httpx.Client) -> None:
    hog = "x = bytearray(1024 * 1024 * 1024)\nprint('allocated')"
    limited = post(client, PYTHON, "-c", hog, limits={"memory_bytes": 256 * MiB})
    done = wait_for_status(client, limited["id"], timeout=30)
    assert done["status"] == "finished"
    assert done["exit_code"] == 1  # MemoryError
    assert done["limits"] == {"memory_bytes": 256 * MiB}


def test_a_fork_loop_is_capped(client: httpx.Client) -> None:
    # RLIMIT_NPROC counts the processes of the payload's user, and the kernel exempts root,
    # so the loop runs as nobody: setpriv keeps the rlimit set before it was exec'd.
    # The exit code says how many background processes the loop managed to start.
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    loop = (
        "n=0; while [ $n -lt 200 ]; do sleep 30 & [ $? -eq 0 ] || break; n=$((n+1)); done; "
        "kill $(jobs -p) 2>/dev/null; exit $n"
    )
    argv = ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", loop]
    record = post(client, setpriv, *argv, limits={"max_processes": 20})
    done = wait_for_status(client, record["id"], timeout=30)
    assert done["status"] == "finished", done
    assert 0 < done["exit_code"] < 20


def test_cpu_burn_is_ended_and_its_usage_recorded(client: httpx.Client) -> None:
    burn = post(client, PYTHON, "-c", "while True: pass", limits={"cpu_seconds": 1})
    done = wait_for_status(client, burn["id"], timeout=30)
    assert done["status"] == "finished"
    assert done["signal"] == "SIGXCPU"
    # The kernel checks RLIMIT_CPU at its own tick; accounting and the check differ a little.
    assert 0.5 <= done["cpu_user_seconds"] + done["cpu_system_seconds"] < 3
    assert done["duration_seconds"] >= 0.9
    assert done["max_rss_bytes"] > 1 * MiB


def test_usage_is_plausible_for_a_known_burn(client: httpx.Client) -> None:
    # About 0.5 s of CPU (process_time may count its own syscalls as system time), then exit 0.
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    done = wait_for_status(client, post(client, PYTHON, "-c", burn)["id"], timeout=30)
    assert done["exit_code"] == 0
    assert 0.45 <= done["cpu_user_seconds"] + done["cpu_system_seconds"] < 2
    assert done["duration_seconds"] >= 0.45
    # Linux counts the spawning server's own RSS into a vfork'd child's peak, so only a
    # lower bound is meaningful: a 64 MiB allocation shows up.
    alloc = wait_for_status(
        client, post(client, PYTHON, "-c", "x = b'1' * (64 * 1024 * 1024)")["id"], timeout=30
    )
    assert alloc["max_rss_bytes"] >= 64 * MiB


def test_file_size_limit(client: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "big"
    record = post(
        client,
        "/usr/bin/head",
        "-c",
        str(10 * MiB),
        "/dev/zero",
        stdin=None,
        limits={"max_file_size": MiB},
    )
    # head writes to its stdout pipe, which no limit covers: it ends normally.
    assert wait_for_status(client, record["id"])["exit_code"] == 0
    script = f'head -c {10 * MiB} /dev/zero > "$0"'
    done = wait_for_status(
        client,
        post(client, "/bin/sh", "-c", f"exec {script}", str(out), limits={"max_file_size": MiB})[
            "id"
        ],
    )
    assert done["signal"] == "SIGXFSZ"
    assert out.stat().st_size == MiB


def test_open_files_limit(client: httpx.Client) -> None:
    opener = "fs = [open('/dev/null') for _ in range(100)]"
    done = wait_for_status(
        client, post(client, PYTHON, "-c", opener, limits={"max_open_files": 20})["id"]
    )
    assert done["exit_code"] == 1  # OSError: Too many open files


def test_server_caps_bound_and_default_what_a_client_asks() -> None:
    caps = ("--max-timeout", "60", "--max-memory", str(512 * MiB))
    with running_server(*caps) as server, server.client() as client:
        over = client.post("/payloads", json={"cmd": "/bin/true", "timeout": 61})
        assert over.status_code == 422
        assert "cap" in over.json()["detail"]
        big = {"cmd": "/bin/true", "limits": {"memory_bytes": 1024 * MiB}}
        assert client.post("/payloads", json=big).status_code == 422
        record = post(client, "/bin/true", timeout=5)
        assert record["timeout"] == 5
        assert record["limits"] == {"memory_bytes": 512 * MiB}
        plain = post(client, "/bin/true")
        assert plain["timeout"] == 60
        assert wait_for_status(client, plain["id"])["status"] == "finished"
