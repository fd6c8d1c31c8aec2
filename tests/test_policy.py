"""The command policy against a real server: resolution tricks, explain answers, rules."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Server,
    handler_serve,
    post,
    running_server,
    start_server,
    wait_for_status,
)

ECHO = os.path.realpath("/bin/echo")
TRUE = os.path.realpath("/bin/true")


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("policy")
    (root / "bin").mkdir()
    (root / "work").mkdir()
    shutil.copy(ECHO, root / "bin" / "pinned")
    shutil.copy(ECHO, root / "bin" / "changing")
    shutil.copy(TRUE, root / "bin" / "target")
    # A rule names this link; what the policy allows is the file it pointed to at load.
    (root / "bin" / "link").symlink_to(root / "bin" / "target")
    # A link to an allowed binary: it resolves to that binary, so it is that binary.
    (root / "to-true").symlink_to(TRUE)
    echo_sha = sha256(ECHO)
    (root / "policy.toml").write_text(
        f"""
[[rule]]
name = "greet"
cmd = "/bin/echo"
max_params = 3
params = [{{values = ["-n", "hello"]}}, {{regex = "[a-z]+"}}]
rest = {{regex = "[0-9]+"}}

[[rule]]
name = "pinned"
cmd = "{root}/bin/pinned"
sha256 = "{echo_sha}"
cwd = ["{root}/work"]

[[rule]]
name = "changing"
cmd = "{root}/bin/changing"
sha256 = "{echo_sha}"

[[rule]]
name = "linked"
cmd = "{root}/bin/link"

[[rule]]
name = "printenv"
cmd = "printenv"
env = ["GREETING", "TZDIR", "LC_*", "LD_*"]
max_timeout = 30
"""
    )
    return root


@pytest.fixture(scope="module")
def policed(area: Path) -> Iterator[Server]:
    srv = start_server(
        "--policy",
        str(area / "policy.toml"),
        "--allow",
        "/bin/true",
        "--payload-path",
        "/usr/bin:/bin",
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pclient(policed: Server) -> Iterator[httpx.Client]:
    with policed.client() as c:
        yield c


def check(client: httpx.Client, cmd: str, *params: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/payloads/check", json={"cmd": cmd, "params": list(params), **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refused(client: httpx.Client, cmd: str, *params: str, **fields: Any) -> dict[str, Any]:
    before = len(client.get("/payloads").json())
    response = client.post("/payloads", json={"cmd": cmd, "params": list(params), **fields})
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert len(client.get("/payloads").json()) == before  # nothing stored
    problem: dict[str, Any] = response.json()
    assert problem["type"] == "/problems/policy-denied"
    return problem


def test_start_up_log_names_the_rules(policed: Server) -> None:
    rules = "--allow /bin/true, greet, pinned, changing, linked, printenv"
    assert f"command policy: 6 rule(s): {rules}" in policed.log()
    assert "any command may run" not in policed.log()


def test_paths_are_matched_once_resolved(pclient: httpx.Client, area: Path) -> None:
    # /bin may link to /usr/bin: the rule and the command resolve the same way.
    for cmd in ("/bin/echo", "echo", "/bin/../bin/echo", "/usr/bin/./echo"):
        answer = check(pclient, cmd, "hello")
        assert answer["allowed"], (cmd, answer)
        assert answer["rule"] == "greet"
        assert answer["exe"] == ECHO
    assert check(pclient, str(area / "to-true"))["rule"] == "--allow /bin/true"
    problem = refused(pclient, "/bin/../bin/sh", "-c", "id")
    assert problem["rule"] is None
    assert problem["reason"] == f"no rule allows {os.path.realpath('/bin/sh')}"
    missing = refused(pclient, "/sbin/ping")
    assert "No such file or directory" in missing["reason"]


def test_a_linked_rule_allows_the_file_it_named_at_load(pclient: httpx.Client, area: Path) -> None:
    link = area / "bin" / "link"
    assert check(pclient, str(link))["rule"] == "linked"
    link.unlink()
    link.symlink_to("/bin/sh")  # retargeting the link does not move the rule
    try:
        assert refused(pclient, str(link))["rule"] is None
    finally:
        link.unlink()
        link.symlink_to(area / "bin" / "target")


def test_relative_commands_resolve_against_cwd(pclient: httpx.Client, area: Path) -> None:
    work = str(area / "work")
    for cmd in ("../bin/pinned", "./../bin/pinned"):
        record = post(pclient, cmd, "hi", cwd=work)
        done = wait_for_status(pclient, record["id"])
        assert done["status"] == "finished", done
        assert done["exe"] == str(area / "bin" / "pinned")
        assert done["exe_sha256"] == sha256(ECHO)
        assert pclient.get(f"/payloads/{record['id']}/output").text == "hi\n"


def test_cwd_must_be_under_a_named_directory(pclient: httpx.Client, area: Path) -> None:
    problem = refused(pclient, str(area / "bin" / "pinned"), cwd="/")
    assert problem["rule"] == "pinned"
    assert problem["reason"] == "cwd / is not under a directory the rule names"
    # A rule without `cwd` accepts none at all.
    assert refused(pclient, "/bin/true", cwd=str(area))["rule"] == "--allow /bin/true"


def test_a_changed_binary_no_longer_matches_its_pin(pclient: httpx.Client, area: Path) -> None:
    changing = area / "bin" / "changing"
    assert check(pclient, str(changing), "x")["allowed"]
    original = changing.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF  # same size, one byte different
    changing.write_bytes(bytes(data))
    try:
        answer = check(pclient, str(changing), "x")
        assert not answer["allowed"]
        assert answer["rule"] == "changing"
        assert answer["exe_sha256"] == sha256(changing)
        assert f"not the pinned {sha256(ECHO)}" in answer["reason"]
    finally:
        # The area outlives this test: the next store's run starts from the pinned file.
        changing.write_bytes(original)


def test_param_rules_and_max_count(pclient: httpx.Client) -> None:
    assert check(pclient, "echo")["allowed"]
    assert check(pclient, "echo", "-n", "abc", "42")["allowed"]
    cases = {
        ("-e",): "param 0 '-e' is not allowed",
        ("hello", "ABC"): "param 1 'ABC' is not allowed",
        ("hello", "abc", "x"): "param 2 'x' is not allowed",
        ("hello", "abc", "1", "2"): "4 params, at most 3 allowed",
    }
    for params, reason in cases.items():
        answer = check(pclient, "echo", *params)
        assert answer == {
            "allowed": False,
            "rule": "greet",
            "reason": reason,
            "exe": ECHO,
            "exe_sha256": sha256(ECHO),
        }
        assert refused(pclient, "echo", *params)["reason"] == reason


def test_a_rule_without_env_accepts_no_variable(pclient: httpx.Client) -> None:
    # Not a deny-list: harmless-looking names are refused as surely as loader hooks.
    for name in ("LANG", "PATH", "GZIP", "TAR_OPTIONS", "EDITOR", "PAGER", "LD_PRELOAD"):
        for field in ("env", "secret_env"):
            problem = refused(pclient, "/bin/true", **{field: {name: "/tmp/x"}})
            assert problem["rule"] == "--allow /bin/true"
            assert problem["reason"].startswith(f"env {name} is not accepted")
            assert "/tmp/x" not in str(problem)
            answer = check(pclient, "/bin/true", **{field: {name: "x"}})
            assert answer["allowed"] is False
            assert answer["rule"] == "--allow /bin/true"
            assert answer["reason"] == problem["reason"]
    problem = refused(pclient, str(TRUE), env={"LC_ALL": "C"})
    assert "refused by rule '--allow /bin/true'" in problem["detail"]
    assert "LC_ALL" in problem["detail"]


def test_a_rule_accepts_only_the_names_it_lists(pclient: httpx.Client) -> None:
    record = post(pclient, "printenv", "TZDIR", env={"TZDIR": "/usr/share/zoneinfo"})
    assert wait_for_status(pclient, record["id"])["exit_code"] == 0
    assert pclient.get(f"/payloads/{record['id']}/output").text == "/usr/share/zoneinfo\n"
    for name in ("OTHER", "PATH", "GREETINGS", "LANGUAGE"):
        assert refused(pclient, "printenv", env={name: "1"})["reason"] == (
            f"env {name} is not one the rule accepts"
        )
    # A wildcard entry admits names, but never a loader or interpreter hook (second fence).
    assert check(pclient, "printenv", env={"LC_TIME": "C", "GREETING": "hi"})["allowed"]
    reason = refused(pclient, "printenv", env={"LD_PRELOAD": "/tmp/x.so"})["reason"]
    assert reason.startswith("env LD_PRELOAD (LD_*) can change what the program does")


def test_path_is_the_servers_unless_the_rule_lists_it(pclient: httpx.Client, area: Path) -> None:
    fake = area / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "printenv").write_text("#!/bin/sh\necho FAKE\n")
    (fake / "printenv").chmod(0o755)
    assert refused(pclient, "printenv", env={"PATH": str(fake)})["rule"] == "printenv"
    record = post(pclient, "printenv", "PATH")
    assert wait_for_status(pclient, record["id"])["status"] == "finished"
    assert pclient.get(f"/payloads/{record['id']}/output").text == "/usr/bin:/bin\n"


def test_rule_caps_bound_and_default_the_timeout(pclient: httpx.Client) -> None:
    assert post(pclient, "printenv")["timeout"] == 30
    assert refused(pclient, "printenv", timeout=60)["reason"] == "timeout 60 is over the rule's 30"


def test_check_stores_and_starts_nothing(pclient: httpx.Client) -> None:
    before = pclient.get("/payloads").json()
    assert check(pclient, "/bin/true")["allowed"]
    assert not check(pclient, "/bin/sh")["allowed"]
    assert pclient.get("/payloads").json() == before


def test_without_a_policy_any_command_runs(client: httpx.Client, server: Server) -> None:
    answer = check(client, "/bin/sh", "-c", "true")
    assert answer == {
        "allowed": True,
        "rule": None,
        "reason": "no policy: any command may run",
        "exe": None,
        "exe_sha256": None,
    }
    assert "no command policy (--allow, --policy): any command may run" in server.log()
    # And the seed's error status is untouched.
    record = post(client, "/sbin/ping", "-c", "1", "x")
    done = wait_for_status(client, record["id"])
    assert done["status"] == "error:start('/sbin/ping':No such file or directory"
    assert "exe" not in done


def test_records_show_the_file_run_and_its_digest(client: httpx.Client) -> None:
    record = post(client, "true")
    done = wait_for_status(client, record["id"])
    assert done["exe"] == TRUE
    assert done["exe_sha256"] == sha256(TRUE)


def test_a_bad_policy_stops_the_server_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\ncmd = "/bin/echo"\nparams = [{regex = "("}]\n')
    argv = [handler_serve(), "--port", "0", "--policy", str(bad)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "rule 0: params[0]: bad regex" in done.stderr


def test_rule_caps_come_before_the_server_caps(tmp_path: Path) -> None:
    # A spec that asks no timeout gets the tightest cap, the rule's or the server's: the
    # server's default must not be taken for something the spec asked over the rule's cap.
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[rule]]\nname = "short"\ncmd = "/bin/true"\nmax_timeout = 60\n\n'
        '[[rule]]\nname = "long"\ncmd = "/bin/echo"\nmax_timeout = 500\n'
    )
    caps = ("--max-timeout", "100", "--policy", str(policy))
    with running_server(*caps) as server, server.client() as client:
        assert post(client, "/bin/true")["timeout"] == 60
        assert post(client, "/bin/echo")["timeout"] == 100
        over_rule = client.post("/payloads", json={"cmd": "/bin/true", "timeout": 80})
        assert over_rule.status_code == 403
        assert over_rule.json()["reason"] == "timeout 80 is over the rule's 60"
        over_server = client.post("/payloads", json={"cmd": "/bin/echo", "timeout": 120})
        assert over_server.status_code == 422
        assert over_server.json()["errors"] == [
            {"loc": "timeout", "msg": "120 is over the server's cap of 100"}
        ]
