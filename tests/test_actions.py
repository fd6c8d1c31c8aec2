"""Named actions against a real server running real commands.

The module's server reads one TOML file as both its policy and its actions: every action
runs `argv.py`, which prints its own argv (and whether it got the secret) as JSON, so each
test sees exactly the argv the server built.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pericles.actions import load
from tests.helpers import (
    PYTHON,
    Server,
    pericles_path,
    post,
    release,
    run_serve,
    start_server,
    wait_for_status,
    wait_until,
)
from tests.test_cli import cli_env

STORES = ("memory",)

ADMIN = "admin-secret-0123456789"
BUTTON = "button-secret-0123456789"
HOOK_SECRET = "hook-secret-0123456789"
PASSWORD = "s3cret-pa55word"

ARGV_SCRIPT = f"""#!{PYTHON}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "secret": os.environ.get("DB_PASSWORD")}}))
"""

# Holds a lock directory while it runs (a second copy running at the same time fails), until
# the test writes into the FIFO `go-<its pid>` it makes beside it. The alarm is a bound, so a
# run whose server was killed cannot wait forever.
LOCKED_SCRIPT = f"""#!{PYTHON}
import os, signal, sys
try:
    os.mkdir(sys.argv[1])
except FileExistsError:
    sys.exit(3)
go = os.path.join(os.path.dirname(sys.argv[1]), f"go-{{os.getpid()}}")
os.mkfifo(go)
signal.alarm(300)
with open(go) as gate:
    gate.readline()
os.rmdir(sys.argv[1])
"""


# Runs until the test writes into the FIFO `go-<its pid>` it makes beside it.
GATED_SCRIPT = f"""#!{PYTHON}
import os, signal
go = os.path.join(os.path.dirname(__file__), f"go-{{os.getpid()}}")
os.mkfifo(go)
signal.alarm(300)
with open(go) as gate:
    gate.readline()
"""


def actions_toml(area: Path) -> str:
    return f"""
[[rule]]
name = "the argv printer, with no environment"
cmd = "{area}/argv.py"
rest = {{regex = ".*"}}
env = []

[[rule]]
name = "the locked script"
cmd = "{area}/locked.py"
rest = {{regex = ".*"}}

[[rule]]
name = "raw echo"
cmd = "/bin/echo"
rest = {{regex = ".*"}}

[[action]]
name = "all-types"
title = "Every argument type"
cmd = "{area}/argv.py"
params = [
    "--name={{name}}", "{{db}}", "{{level}}", "{{ratio}}", "{{fast}}", "{{file}}", "{{{{x}}}}"
]
labels = {{ kind = "test" }}
[action.args.name]
pattern = "[a-z][a-z0-9 ;$()`'\\"*-]*"
max_length = 12
[action.args.db]
enum = ["orders", "users"]
[action.args.level]
type = "integer"
minimum = 1
maximum = 9
default = 6
[action.args.ratio]
type = "number"
minimum = 0
maximum = 1
default = 0.5
[action.args.fast]
type = "boolean"
flag = "--fast"
[action.args.file]
type = "path"
root = "{area}/files"
default = "a.txt"
[action.args.password]
type = "secret"
env = "DB_PASSWORD"

[[action]]
name = "free-text"
cmd = "{area}/argv.py"
params = ["-m", "{{text}}"]
[action.args.text]
max_length = 200

[[action]]
name = "echo"
cmd = "{area}/argv.py"
params = ["{{word}}"]
hook_secret = "{HOOK_SECRET}"
hook_args = {{ word = "/repository/name" }}
[action.args.word]
pattern = "[a-z]+"
default = "nothing"

[[action]]
name = "locked"
cmd = "{area}/locked.py"
params = ["{area}/held"]
concurrency = 1

[[action]]
name = "gated"
cmd = "{area}/gated.py"
lock = "gate"

[[action]]
name = "not-allowed"
cmd = "/bin/true"
"""


TOKENS = f"""
[[token]]
name = "admin"
secret = "{ADMIN}"
scope = "run"

[[token]]
name = "button"
secret = "{BUTTON}"
scope = "run"
actions = ["echo"]
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    area = tmp_path_factory.mktemp("actions").resolve()
    _script(area / "argv.py", ARGV_SCRIPT)
    _script(area / "locked.py", LOCKED_SCRIPT)
    _script(area / "gated.py", GATED_SCRIPT)
    (area / "files" / "sub").mkdir(parents=True)
    (area / "files" / "a.txt").write_text("a")
    (area / "outside").mkdir()
    (area / "files" / "escape").symlink_to(area / "outside")
    (area / "actions.toml").write_text(actions_toml(area))
    (area / "tokens.toml").write_text(TOKENS)
    return area


@pytest.fixture(scope="module")
def srv(area: Path) -> Iterator[Server]:
    conf = str(area / "actions.toml")
    server = start_server(
        *("--policy", conf, "--actions", conf, "--tokens-file", str(area / "tokens.toml")),
        *("--max-running", "32"),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin(srv: Server) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


@pytest.fixture
def button(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(headers={"Authorization": f"Bearer {BUTTON}"}) as client:
        yield client


def run(client: httpx.Client, action: str, /, **args: Any) -> httpx.Response:
    return client.post(f"/actions/{action}/run", json={"args": args})


def ran(client: httpx.Client, action: str, /, **args: Any) -> dict[str, Any]:
    """Run an action to its end; what argv.py printed, and the record."""
    response = run(client, action, **args)
    assert response.status_code == 201, response.text
    record = wait_for_status(client, response.json()["id"])
    assert record["exit_code"] == 0, record
    printed: dict[str, Any] = json.loads(client.get(f"/payloads/{record['id']}/output").text)
    return {"record": record, **printed}


def refused_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["loc"] for error in response.json()["errors"]}


GOOD = {"name": "ann", "db": "orders", "password": PASSWORD}


def test_actions_list_a_schema_a_form_can_use(admin: httpx.Client) -> None:
    listed = {a["name"]: a for a in admin.get("/actions").json()}
    assert set(listed) == {"all-types", "free-text", "echo", "locked", "gated", "not-allowed"}
    schema = listed["all-types"]["args_schema"]
    assert schema["required"] == ["name", "db", "password"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["db"]["enum"] == ["orders", "users"]
    assert (props["level"]["minimum"], props["level"]["maximum"], props["level"]["default"]) == (
        1,
        9,
        6,
    )
    assert props["password"]["writeOnly"] is True
    assert props["name"]["maxLength"] == 12
    assert listed["locked"]["concurrency"] == 1
    assert listed["echo"]["hook"] is True


def test_a_run_is_an_ordinary_payload_with_its_action_and_args(admin: httpx.Client) -> None:
    out = ran(admin, "all-types", **GOOD, fast=True, file="sub/../a.txt")
    files = out["record"]["args"]["file"]
    assert out["argv"] == ["--name=ann", "orders", "6", "0.5", "--fast", files, "{x}"]
    assert files.endswith("/files/a.txt")
    record = out["record"]
    assert record["action"] == "all-types"
    assert record["args"] == {
        "name": "ann",
        "db": "orders",
        "level": 6,
        "ratio": 0.5,
        "fast": True,
        "file": files,
    }
    assert record["created_by"] == "admin"
    assert record["labels"] == {"kind": "test"}
    # The secret reached its variable (the policy's env = [] does not refuse a name the
    # action declares), was masked in the output, and is nowhere in the record.
    assert out["secret"] == "***"
    assert record["secret_env_names"] == ["DB_PASSWORD"]
    assert PASSWORD not in json.dumps(record)


def test_a_false_boolean_renders_nothing(admin: httpx.Client) -> None:
    assert "--fast" not in ran(admin, "all-types", **GOOD)["argv"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"level": 0}, "args.level"),
        ({"level": 10}, "args.level"),
        ({"level": "5"}, "args.level"),
        ({"level": 5.5}, "args.level"),
        ({"level": True}, "args.level"),
        ({"ratio": 1.01}, "args.ratio"),
        ({"ratio": -0.01}, "args.ratio"),
        ({"ratio": "0.5"}, "args.ratio"),
        ({"fast": "yes"}, "args.fast"),
        ({"fast": 1}, "args.fast"),
        ({"db": "Orders"}, "args.db"),
        ({"db": ""}, "args.db"),
        ({"name": "a" * 13}, "args.name"),
        ({"name": "Ann"}, "args.name"),
        ({"name": ""}, "args.name"),
        ({"name": 7}, "args.name"),
        ({"file": "../outside"}, "args.file"),
        ({"file": "sub/../../outside"}, "args.file"),
        ({"file": "/etc/passwd"}, "args.file"),
        ({"file": "escape/x"}, "args.file"),
        ({"file": ""}, "args.file"),
        ({"password": ""}, "args.password"),
        ({"password": None}, "args.password"),
        ({"unknown": "x"}, "args.unknown"),
    ],
)
def test_each_type_refuses_past_its_edges(
    admin: httpx.Client, changes: dict[str, Any], field: str
) -> None:
    before = len(admin.get("/payloads").json())
    assert refused_fields(run(admin, "all-types", **{**GOOD, **changes})) == {field}
    assert len(admin.get("/payloads").json()) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"level": 1},
        {"level": 9},
        {"ratio": 0},
        {"ratio": 1},
        {"name": "a" * 12},
        {"db": "users"},
        {"file": "sub"},
        {"file": "."},  # the root itself
    ],
)
def test_each_type_accepts_its_edges(admin: httpx.Client, changes: dict[str, Any]) -> None:
    response = run(admin, "all-types", **{**GOOD, **changes})
    assert response.status_code == 201, response.text


def test_a_missing_required_argument_is_named(admin: httpx.Client) -> None:
    assert refused_fields(run(admin, "all-types", db="orders")) == {"args.name", "args.password"}


def test_a_secret_is_never_quoted_back(admin: httpx.Client) -> None:
    response = run(admin, "all-types", **{**GOOD, "password": 12345, "level": "x"})
    assert "12345" not in response.text


@pytest.mark.parametrize(
    "text",
    [
        "; rm -rf /",
        "$(touch /tmp/pwned)",
        "`id`",
        "a b  c",
        "'\"",
        "*",
        "a --help inside",
        "x{word}y",
        "ünïcode",
    ],
)
def test_injection_never_changes_the_argv_shape(admin: httpx.Client, text: str) -> None:
    assert ran(admin, "free-text", text=text)["argv"] == ["-m", text]


@pytest.mark.parametrize("text", ["-rf", "--output=/etc/x", "a\nb", "a\rb", "tab\there", "\x00"])
def test_option_lookalikes_and_control_characters_are_refused(
    admin: httpx.Client, text: str
) -> None:
    assert refused_fields(run(admin, "free-text", text=text)) == {"args.text"}


def test_the_policy_still_judges_an_actions_command(admin: httpx.Client) -> None:
    response = run(admin, "not-allowed")
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "/problems/policy-denied"


def test_bad_requests_change_nothing(admin: httpx.Client) -> None:
    assert admin.post("/actions/nope/run", json={"args": {}}).status_code == 404
    response = admin.post("/actions/echo/run", json={"args": {}, "cmd": "/bin/sh"})
    assert refused_fields(response) == {"cmd"}
    assert admin.post("/actions/echo/run", content=b"{").status_code == 400
    assert refused_fields(admin.post("/actions/echo/run", json={"args": []})) == {"args"}


# -- hypothesis: the argv's shape is the template's ------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.from_regex(r"[a-z][a-z0-9 ;$()`'\"*-]{0,11}", fullmatch=True),
    db=st.sampled_from(["orders", "users"]),
    level=st.integers(1, 9),
    ratio=st.floats(0, 1),
    fast=st.booleans(),
    file=st.sampled_from(["a.txt", "sub", "sub/../a.txt", "./sub/.", "x y"]),
)
def test_valid_args_give_exactly_the_declared_elements(
    area: Path, name: str, db: str, level: int, ratio: float, fast: bool, file: str
) -> None:
    action = load(area / "actions.toml", {}).get("all-types")
    args = {"name": name, "db": db, "level": level, "ratio": ratio, "fast": fast, "file": file}
    spec, invocation = action.invoke({**args, "password": PASSWORD})
    assert len(spec.params) == len(action.params) - (not fast)
    assert spec.params[:4] == [f"--name={name}", db, str(level), repr(ratio)]
    assert spec.params[-1] == "{x}"
    assert PASSWORD not in spec.params
    assert invocation.args["name"] == name


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    args=st.dictionaries(
        st.sampled_from(["name", "db", "level", "ratio", "fast", "file", "password", "other"]),
        _JSON,
    )
)
def test_no_args_crash_the_server(srv: Server, args: dict[str, Any]) -> None:
    with srv.client() as client:
        response = client.post("/actions/all-types/run", json={"args": args})
    assert response.status_code in (201, 422), response.text
    assert PASSWORD not in response.text


# -- tokens limited to actions ------------------------------------------------------------


def test_a_limited_token_runs_its_actions_and_nothing_else(
    admin: httpx.Client, button: httpx.Client
) -> None:
    raw = post(admin, "/bin/echo", "raw")
    other = run(admin, "free-text", text="other").json()
    mine = run(button, "echo", word="mine")
    assert mine.status_code == 201, mine.text
    assert mine.json()["created_by"] == "button"

    assert [a["name"] for a in button.get("/actions").json()] == ["echo"]
    assert button.post("/payloads", json={"cmd": "/bin/echo"}).status_code == 403
    assert button.post("/payloads/check", json={"cmd": "/bin/echo"}).status_code == 403
    assert run(button, "free-text", text="x").status_code == 404
    assert button.get("/actions/free-text").status_code == 404
    assert button.get("/metrics").status_code == 403

    seen = {r["id"] for r in button.get("/payloads").json()}
    assert mine.json()["id"] in seen
    assert {r["action"] for r in button.get("/payloads").json()} == {"echo"}
    for hidden in (raw["id"], other["id"]):
        assert hidden not in seen
        for path in ("", "/output", "/events"):
            assert button.get(f"/payloads/{hidden}{path}").status_code == 404
        assert button.post(f"/payloads/{hidden}/cancel").status_code == 404
        assert button.delete(f"/payloads/{hidden}").status_code == 404
    # An Idempotency-Key that named another request's payload never hands that one out.
    keyed = admin.post("/payloads", json={"cmd": "/bin/echo"}, headers={"Idempotency-Key": "k"})
    assert keyed.status_code == 201
    again = button.post("/actions/echo/run", json={"args": {}}, headers={"Idempotency-Key": "k"})
    assert again.status_code == 409, again.text
    assert keyed.json()["id"] not in again.text
    record = wait_for_status(button, mine.json()["id"])
    assert json.loads(button.get(f"/payloads/{record['id']}/output").text)["argv"] == ["mine"]


# -- concurrency ----------------------------------------------------------------------


def test_a_lock_holds_under_20_concurrent_runs(srv: Server, area: Path) -> None:
    def one(_: int) -> str:
        with srv.client() as client:
            response = run(client, "locked")
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(one, range(20)))
    with srv.client() as client:

        def states() -> list[dict[str, Any]]:
            return [client.get(f"/payloads/{i}").json() for i in ids]

        def waiting(records: list[dict[str, Any]]) -> list[str]:
            return [r["pending_reason"] for r in records if r["status"] == "pending"]

        lock_reason = "waiting for lock 'action:locked'"
        reasons = wait_until(lambda: waiting(states()), what="the runs to queue")
        assert len(reasons) == 19
        assert all(lock_reason in r for r in reasons if r), reasons
        for left in range(20, 0, -1):
            # One at a time works, however many slots are free (--max-running 32).
            working = wait_until(
                lambda: [r for r in states() if r["status"] == "working"], what="a run"
            )
            assert len(working) == 1
            assert len(waiting(states())) == left - 1
            release(area / f"go-{working[0]['pid']}")
            wait_for_status(client, working[0]["id"])
        ended = states()
    assert [r["exit_code"] for r in ended] == [0] * 20  # 3 would be an overlap


# -- webhooks -------------------------------------------------------------------------


def deliver(
    client: httpx.Client, body: bytes, secret: str | None = HOOK_SECRET, delivery: str = "d1"
) -> httpx.Response:
    headers = {"X-GitHub-Delivery": delivery, "Content-Type": "application/json"}
    if secret is not None:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = f"sha256={digest}"
    # No bearer token: the signature is the credential.
    return client.post("/actions/echo/hook", content=body, headers=headers)


def test_a_signed_delivery_runs_its_action_once(srv: Server) -> None:
    body = json.dumps({"repository": {"name": "pericles"}, "n": 1}).encode()
    with httpx.Client(base_url=srv.url) as anonymous, srv.client() as admin:
        assert anonymous.post("/actions/echo/run", json={"args": {}}).status_code == 401
        assert deliver(anonymous, body, secret=None).status_code == 403
        assert deliver(anonymous, body, secret="wrong-secret-0123456789").status_code == 403
        accepted = deliver(anonymous, body)
        assert accepted.status_code == 201, accepted.text
        record = wait_for_status(admin, accepted.json()["id"])
        printed = json.loads(admin.get(f"/payloads/{record['id']}/output").text)
        assert printed["argv"] == ["pericles"]
        # The same delivery again, and again with another id header (it is not signed).
        assert deliver(anonymous, body).status_code == 409
        assert deliver(anonymous, body, delivery="d2").status_code == 409
        fresh = json.dumps({"repository": {"name": "pericles"}, "n": 2}).encode()
        assert deliver(anonymous, fresh, delivery="d1").status_code == 409
        assert deliver(anonymous, fresh, delivery="d3").status_code == 201
        bad = json.dumps({"repository": {"name": "NOT; ok"}}).encode()
        assert refused_fields(deliver(anonymous, bad, delivery="d4")) == {"args.word"}
        assert anonymous.post("/actions/locked/hook", content=b"{}").status_code == 404


# -- the CLI --------------------------------------------------------------------------


def cli(srv: Server, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(srv), "PERICLES_TOKEN": ADMIN, **env_vars}
    return subprocess.run(
        [pericles_path(), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_the_cli_runs_an_action_with_options_from_its_schema(srv: Server) -> None:
    listed = cli(srv, "actions")
    assert "all-types" in listed.stdout
    assert "--fast" in listed.stdout
    helped = cli(srv, "do", "all-types", "--help")
    assert helped.returncode == 0
    assert "[orders|users]" in helped.stdout
    assert "--fast / --no-fast" in helped.stdout
    done = cli(srv, "do", "free-text", "--text", "a; b $(c)", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["argv"] == ["-m", "a; b $(c)"]
    assert done.stderr == ""
    bad = cli(srv, "do", "all-types", "--name", "ann", "--db", "nope")
    assert bad.returncode == 2
    assert "nope" in bad.stderr
    # A secret comes from the environment (or a prompt), never the command line.
    secret = cli(
        srv,
        "do",
        "all-types",
        "--name",
        "ann",
        "--db",
        "users",
        "--fast",
        "--wait",
        PERICLES_ARG_PASSWORD=PASSWORD,
    )
    assert secret.returncode == 0, secret.stderr
    printed = json.loads(secret.stdout)
    assert printed["argv"][:5] == ["--name=ann", "users", "6", "0.5", "--fast"]
    assert printed["secret"] == "***"
    refused = cli(srv, "do", "free-text", "--text", "-rf")
    assert refused.returncode != 0
    assert refused.stderr.startswith("pericles: args.text: must not start with '-'")


# -- reloading ------------------------------------------------------------------------


def test_sighup_reloads_and_a_bad_file_keeps_the_old(tmp_path: Path, area: Path) -> None:
    conf = tmp_path / "actions.toml"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    conf.write_text(
        f'[[action]]\nname = "one"\ncmd = "{PYTHON}"\n'
        f'params = ["-c", "open(\'{gate}\').readline()"]\n'
    )
    server = start_server("--actions", str(conf))
    try:
        with server.client() as client:
            first = run(client, "one").json()
            wait_for_status(client, first["id"], "working")
            conf.write_text('[[action]]\nname = "two"\ncmd = "/bin/true"\n')
            os.kill(server.pid, signal.SIGHUP)
            wait_until(
                lambda: [a["name"] for a in client.get("/actions").json()] == ["two"],
                what="the new actions",
            )
            assert client.get(f"/payloads/{first['id']}").json()["status"] == "working"
            release(gate)
            assert wait_for_status(client, first["id"])["exit_code"] == 0

            conf.write_text("[[action]\nname = ")
            os.kill(server.pid, signal.SIGHUP)
            wait_until(lambda: "reload refused" in server.log(), what="the refusal")
            assert [a["name"] for a in client.get("/actions").json()] == ["two"]
            assert run(client, "two").status_code == 201
        refusals = [line for line in server.log().splitlines() if "reload refused" in line]
        assert len(refusals) == 1
    finally:
        server.stop()


def test_a_bad_actions_file_stops_the_server_at_start(tmp_path: Path) -> None:
    conf = tmp_path / "actions.toml"
    conf.write_text('[[action]]\nname = "x"\ncmd = "/bin/echo"\nparams = ["{nope}"]\n')
    done = run_serve("--actions", str(conf))
    assert done.returncode == 2
    assert "not in args" in done.stderr
    assert "Traceback" not in done.stderr


def test_runs_waiting_for_a_lock_keep_it_across_a_restart(tmp_path: Path, area: Path) -> None:
    store = ("--store", f"sqlite:///{tmp_path / 'records.db'}")
    argv = ("--actions", str(area / "actions.toml"), *store)
    server = start_server(*argv)
    with server.client() as client:
        ids = [run(client, "gated").json()["id"] for _ in range(3)]
        wait_for_status(client, ids[0], "working")
    server.stop(signal.SIGKILL)
    server = start_server(*argv)
    try:
        with server.client() as client:
            assert client.get(f"/payloads/{ids[0]}").json()["status"] == "lost"
            second = wait_for_status(client, ids[1], "working")
            third = client.get(f"/payloads/{ids[2]}").json()
            assert third["status"] == "pending"
            assert "waiting for lock 'gate'" in third["pending_reason"]
            release(area / f"go-{second['pid']}")
            third = wait_for_status(client, ids[2], "working")
            release(area / f"go-{third['pid']}")
            ended = [wait_for_status(client, i) for i in ids[1:]]
            assert [r["exit_code"] for r in ended] == [0, 0]
            assert ended[0]["finished_at"] <= ended[1]["started_at"]
    finally:
        server.stop()
