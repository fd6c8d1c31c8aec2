"""Property-based fuzzing of the live API with Schemathesis, from its own /openapi.json.

Every operation gets generated requests, valid and invalid (positive and negative modes),
and every answer must be no 5xx and must match the document: status codes, content types,
headers and bodies. The server runs with a token, so the checks also see that a request
without it is refused.

Kept safe and bounded:
- Nothing generated ever runs. POST /payloads is fuzzed in full (every spec field reaches
  validation, the service, the queue and the spawn path), but a generated `cmd` is put
  under a directory that does not exist. The kernel resolves a path one component at a
  time, so no `..` in the rest can climb out: each start ends in `error:start(...)`, and
  the last test checks that no payload ever ran.
- Control endpoints (cancel, signal, stdin, delete) are fuzzed as they are: they only
  reach payloads of this server, none of which runs.
- `GET /events` never ends by itself and is left out. A payload's output with
  `follow=true` and its `/events` end once the payload has: every payload here ends at
  once. Every request also has a timeout.
- Few examples per operation and no shrinking: a CI-friendly run of a few seconds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Err

from tests.helpers import Server, is_terminal, start_server

TOKEN = "fuzz-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: FUZZ_EXAMPLES=500 for a deeper run than CI's.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]
_SPEC_PATHS = ("/payloads", "/payloads/check")


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Server]:
    server = start_server("--token", TOKEN, "--max-running", "4", headers=AUTH)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def absent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that does not exist, and that nothing will create during the run."""
    path = tmp_path_factory.mktemp("fuzz") / "absent"
    assert not path.exists()
    return path


def _operations(server: Server) -> list[Operation]:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.update(base_url=server.url)
    operations = []
    for result in schema.exclude(path="/events").get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the served OpenAPI document is invalid: {result.err()}")
        operations.append(result.ok())
    return operations


def _defuse(case: Case, absent: Path) -> None:
    """Put a generated command under a directory that does not exist: it cannot run."""
    body = case.body
    if case.method == "POST" and case.path in _SPEC_PATHS and isinstance(body, dict):
        cmd = body.get("cmd")
        # An empty cmd stays empty: it is invalid, and must stay so in a negative case.
        if isinstance(cmd, str) and cmd:
            body["cmd"] = f"{absent}/{cmd}"
        # Whether a directory exists is the server's state, which no document describes:
        # a well-formed cwd is made one that exists (a malformed one stays malformed).
        cwd = body.get("cwd")
        if isinstance(cwd, str) and cwd and "\x00" not in cwd:
            body["cwd"] = "/"
        _keep_secrets_apart(body)
        _keep_callbacks_home(body)


def _keep_secrets_apart(body: dict[str, Any]) -> None:
    """What JSON Schema cannot say: no name in both env and secret_env, and no secret value
    inside another field (the server refuses both, 422, as the descriptions say)."""
    env, secrets = body.get("env"), body.get("secret_env")
    if not isinstance(secrets, dict):
        return
    if isinstance(env, dict):
        for name in set(env) & set(secrets):
            del env[name]
    for number, name in enumerate(list(secrets)):
        if isinstance(secrets[name], str):
            secrets[name] = f"fuzz-secret-{number}-{uuid.uuid4().hex}"


def _keep_callbacks_home(body: dict[str, Any]) -> None:
    """A generated callback URL must never reach out of this machine: each becomes a
    loopback address, which the server's address guard refuses without connecting."""
    callbacks = body.get("callbacks")
    if isinstance(callbacks, list):
        for callback in callbacks:
            if isinstance(callback, dict) and isinstance(callback.get("url"), str):
                callback["url"] = "http://127.0.0.1:9/fuzz"


def _fuzz(operation: Operation, mode: GenerationMode, absent: Path) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        _defuse(case, absent)
        case.call_and_validate(headers=AUTH, timeout=10)

    run()


# Plain Hypothesis over Schemathesis' strategies rather than its pytest plugin, which
# reads pytest internals that pytest 9 no longer has.
@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_matches_its_description(
    fuzzed: Server, absent_dir: Path, mode: GenerationMode
) -> None:
    operations = _operations(fuzzed)
    assert len(operations) > 10
    failures = []
    for operation in operations:
        try:
            _fuzz(operation, mode, absent_dir)
        except Unsatisfiable:
            # Nothing to get wrong in a request without parameters or body (GET /healthz).
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow  # it checks what the fuzz run above created
def test_no_fuzzed_payload_ever_ran(fuzzed: Server) -> None:
    with fuzzed.client() as client:
        records = client.get("/payloads").json()
    assert records, "the fuzz run created no payload: POST /payloads was not exercised"
    for record in records:
        assert "pid" not in record, record  # never started: the field is left out
        assert record["status"].startswith("error:start(") or record["status"] in (
            "pending",
            "cancelled",
        ), record
    assert not [r for r in records if not is_terminal(r) and r["status"] != "pending"]


def test_the_fuzzed_server_is_still_ready(fuzzed: Server) -> None:
    with fuzzed.client() as client:
        assert client.get("/readyz").status_code == 200
        with pytest.raises(httpx.HTTPStatusError):
            client.get("/events", params={"status": "nope"}).raise_for_status()
