"""--run-as: payloads drop to another user and group (the tests run as root, so it is real)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, post, start_server, wait_for_status

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid


@pytest.fixture(scope="module")
def dropped() -> Iterator[Server]:
    srv = start_server("--run-as", "nobody:nogroup")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def dclient(dropped: Server) -> Iterator[httpx.Client]:
    with dropped.client() as c:
        yield c


def run(
    client: httpx.Client, cmd: str, *params: str, **fields: object
) -> tuple[dict[str, object], str]:
    record = post(client, cmd, *params, **fields)
    done = wait_for_status(client, record["id"])
    return done, client.get(f"/payloads/{record['id']}/output?stream=both").text


def test_the_tests_run_as_root() -> None:
    assert os.geteuid() == 0  # else --run-as would not be exercised for real


def test_payloads_run_as_the_user_with_no_other_groups(dclient: httpx.Client) -> None:
    # Both spawn paths: the plain one, and the one that also sets limits and cwd.
    for fields in ({}, {"cwd": "/tmp", "limits": {"max_open_files": 64}}):
        for flag, want in (("-u", NOBODY), ("-g", NOGROUP), ("-G", NOGROUP)):
            done, out = run(dclient, "id", flag, **fields)
            assert done["status"] == "finished", done
            assert out.split() == [str(want)], (flag, out)


def test_output_and_stdin_work_for_the_dropped_user(dclient: httpx.Client) -> None:
    done, out = run(dclient, "/bin/sh", "-c", "cat; echo err >&2", stdin="fed\n")
    assert done["exit_code"] == 0
    assert out == "fed\nerr\n"


def test_exec_errors_keep_the_seed_status(dclient: httpx.Client, tmp_path: Path) -> None:
    done, _ = run(dclient, "/sbin/ping", "-c", "1", "x")
    assert done["status"] == "error:start('/sbin/ping':No such file or directory"
    # Executable by root only: root could exec it, the dropped user cannot.
    private = tmp_path / "private"
    private.write_text("#!/bin/sh\necho hi\n")
    private.chmod(stat.S_IRWXU)
    os.chmod(tmp_path, 0o755)
    done, _ = run(dclient, str(private))
    assert done["status"] == f"error:start('{private}':Permission denied"


def test_the_start_up_log_names_the_user(dropped: Server) -> None:
    log = dropped.log()
    assert f"payloads run as uid {NOBODY} gid {NOGROUP} (--run-as nobody:nogroup)" in log
    assert "running as root without --run-as" not in log


def test_root_without_run_as_is_warned_about(server: Server, client: httpx.Client) -> None:
    assert "WARNING pericles.security: running as root without --run-as" in server.log()
    _, out = run(client, "id", "-u")
    assert out == "0\n"
