"""The MCP endpoint (`--mcp`), through the official SDK's own client, against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from tests.helpers import (
    Server,
    processes,
    release,
    release_all,
    running_server,
    start_server,
    wait_until,
)

RUN_SECRET = "agent-secret-0123456789abcdef"
READ_SECRET = "viewer-secret-0123456789abcdef"
BUTTON_SECRET = "button-secret-0123456789abcdef"
MAX_OUTPUT = 1024
READ_TOOLS = {"status", "output", "wait", "list"}
ACTION_TOOLS = {"do_greet_someone", "do_login"}
ALL_TOOLS = READ_TOOLS | {"run", "start", "cancel", "check"} | ACTION_TOOLS

TOKENS = f"""
[[token]]
name = "agent"
secret = "{RUN_SECRET}"
scope = "run"

[[token]]
name = "viewer"
secret = "{READ_SECRET}"
scope = "read"

[[token]]
name = "button"
secret = "{BUTTON_SECRET}"
scope = "run"
actions = ["greet.someone"]
"""

ACTIONS = """
[[action]]
name = "greet.someone"
title = "Greet someone"
description = "Say hello to someone by name"
cmd = "echo"
params = ["hello", "{who}"]
[action.args.who]
pattern = "[a-z]+"
max_length = 20

[[action]]
name = "login"
title = "Log in with a key"
cmd = "sh"
params = ["-c", "echo key=$API_KEY"]
[action.args.key]
type = "secret"
env = "API_KEY"
"""

POLICY = """
[[rule]]
name = "greet"
cmd = "echo"
rest = {regex = ".*"}

[[rule]]
name = "shell"
cmd = "sh"
rest = {regex = ".*"}
env = ["API_KEY"]

[[rule]]
name = "numbers"
cmd = "seq"
rest = {regex = "[0-9]+"}

[[rule]]
name = "nap"
cmd = "sleep"
rest = {regex = "[0-9]+"}

[[rule]]
name = "first-line"
cmd = "head"
rest = {regex = ".*"}

[[rule]]
name = "rm-nothing"
cmd = "rm"
max_params = 0
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("mcp")
    (config / "tokens.toml").write_text(TOKENS)
    (config / "policy.toml").write_text(POLICY)
    (config / "actions.toml").write_text(ACTIONS)
    with running_server(
        "--mcp",
        "--actions",
        str(config / "actions.toml"),
        "--mcp-max-output",
        str(MAX_OUTPUT),
        "--tokens-file",
        str(config / "tokens.toml"),
        "--policy",
        str(config / "policy.toml"),
        headers={"Authorization": f"Bearer {RUN_SECRET}"},
    ) as server:
        yield server


@asynccontextmanager
async def connect(server: Server, secret: str = RUN_SECRET) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30.0) as http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
    ):
        yield client


def call(server: Server, tool: str, secret: str = RUN_SECRET, **arguments: Any) -> CallToolResult:
    async def one() -> CallToolResult:
        async with connect(server, secret) as client:
            return await client.call_tool(tool, arguments)

    return asyncio.run(one())


def text_of(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


def facts(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def tool_names(server: Server, secret: str) -> set[str]:
    async def names() -> set[str]:
        async with connect(server, secret) as client:
            return {tool.name for tool in (await client.list_tools()).tools}

    return asyncio.run(names())


def test_without_the_flag_nothing_answers_at_mcp() -> None:
    with running_server() as plain, plain.client() as http:
        response = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert response.status_code == 404


def test_no_token_is_refused_before_the_sdk(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")


def listed_tools(server: Server, secret: str) -> dict[str, Any]:
    async def tools() -> dict[str, Any]:
        async with connect(server, secret) as client:
            return {tool.name: tool for tool in (await client.list_tools()).tools}

    return asyncio.run(tools())


def test_start_takes_what_run_takes_but_wait(server: Server) -> None:
    tools = listed_tools(server, RUN_SECRET)
    run = dict(tools["run"].input_schema["properties"])
    assert run.pop("wait")["maximum"] == 300
    assert tools["start"].input_schema["properties"] == run
    assert tools["start"].input_schema["required"] == ["cmd"]


def test_run_an_allowed_command(server: Server) -> None:
    assert tool_names(server, RUN_SECRET) == ALL_TOOLS
    result = call(server, "run", cmd="echo", params=["hello", "agent"])
    answer = facts(result)
    assert (answer["status"], answer["exit_code"], answer["signal"]) == ("finished", 0, None)
    assert answer["output"] == "hello agent\n"
    assert "exit_code 0" in text_of(result)
    assert "hello agent" in text_of(result)
    # An ordinary payload: on record, with who asked and through what.
    with server.client() as http:
        record = http.get(f"/payloads/{answer['id']}").json()
    assert record["created_by"] == "agent"
    assert record["labels"] == {"client": "mcp"}


def test_exit_status_and_signal_in_structure_and_text(server: Server) -> None:
    result = call(server, "run", cmd="sh", params=["-c", "echo oops >&2; exit 3"])
    assert facts(result)["exit_code"] == 3
    assert "exit_code 3" in text_of(result)
    assert "oops" in text_of(result)
    killed = call(server, "run", cmd="sh", params=["-c", "kill -KILL $$"])
    assert (facts(killed)["exit_code"], facts(killed)["signal"]) == (None, "SIGKILL")
    assert "signal SIGKILL" in text_of(killed)


def test_a_refused_command_is_a_tool_error_naming_the_rule(server: Server) -> None:
    result = call(server, "run", cmd="rm", params=["-rf", "/tmp/nothing-here"])
    assert result.is_error
    assert "rm-nothing" in text_of(result)
    checked = facts(call(server, "check", cmd="rm", params=["-rf", "/"]))
    assert (checked["allowed"], checked["rule"]) == (False, "rm-nothing")
    unknown = call(server, "run", cmd="curl", params=["http://example.com"])
    assert unknown.is_error
    assert "refused" in text_of(unknown)
    with server.client() as http:
        assert not [r for r in http.get("/payloads").json() if r["cmd"] in ("rm", "curl")], (
            "a refused command must leave no record"
        )


def test_bad_arguments_are_tool_errors(server: Server) -> None:
    result = call(server, "run", cmd="echo", env={"A=B": "x"})
    assert result.is_error
    assert "env" in text_of(result)
    missing = call(server, "status", id="0" * 32)
    assert missing.is_error
    assert "no payload" in text_of(missing)


def test_a_long_command_answers_its_id_then_wait_finishes_it(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    running = facts(call(server, "run", cmd="head", params=["-n1", str(gate)], wait=0.2))
    assert not running["done"]
    assert running["status"] == "working"
    assert running["exit_code"] is None
    release(gate)
    done = facts(call(server, "wait", id=running["id"], timeout=30))
    assert (done["status"], done["exit_code"], done["output"]) == ("finished", 0, "go\n")


def test_cancel_stops_a_running_command(server: Server) -> None:
    started = facts(call(server, "start", cmd="sleep", params=["60"]))
    cancelled = facts(call(server, "cancel", id=started["id"]))
    assert cancelled["status"] == "cancelled"
    assert cancelled["signal"] == "SIGTERM"
    listed = facts(call(server, "list", status=["cancelled"], mine=True))
    assert started["id"] in [p["id"] for p in listed["payloads"]]


def test_a_read_token_gets_read_tools_only(server: Server) -> None:
    assert tool_names(server, READ_SECRET) == READ_TOOLS
    refused = call(server, "run", READ_SECRET, cmd="echo", params=["no"])
    assert refused.is_error
    assert "scope read" in text_of(refused)
    assert call(server, "cancel", READ_SECRET, id="0" * 32).is_error
    theirs = facts(call(server, "run", cmd="echo", params=["seen"]))
    seen = facts(call(server, "status", READ_SECRET, id=theirs["id"]))
    assert seen["exit_code"] == 0


def test_each_action_is_a_tool_with_its_argument_schema(server: Server) -> None:
    tools = listed_tools(server, RUN_SECRET)
    assert set(tools) >= ACTION_TOOLS
    with server.client() as http:
        published = http.get("/actions/greet.someone").json()
    greet = tools["do_greet_someone"]
    assert greet.input_schema == published["args_schema"]
    assert greet.input_schema["required"] == ["who"]
    assert greet.description == "Say hello to someone by name"
    assert greet.annotations is not None
    assert greet.annotations.destructive_hint


def test_an_action_tool_runs_the_action_as_the_actions_api_does(server: Server) -> None:
    result = call(server, "do_greet_someone", who="agent")
    answer = facts(result)
    assert (answer["status"], answer["exit_code"], answer["signal"]) == ("finished", 0, None)
    assert answer["output"] == "hello agent\n"
    assert "exit_code 0" in text_of(result)
    assert "hello agent" in text_of(result)
    with server.client() as http:
        record = http.get(f"/payloads/{answer['id']}").json()
    assert (record["action"], record["args"]) == ("greet.someone", {"who": "agent"})
    assert record["created_by"] == "agent"
    assert record["labels"] == {"client": "mcp"}


def test_bad_action_arguments_are_a_tool_error_naming_them(server: Server) -> None:
    wrong = call(server, "do_greet_someone", who="Robert'); DROP TABLE")
    assert wrong.is_error
    assert "args.who" in text_of(wrong)
    missing = call(server, "do_greet_someone")
    assert missing.is_error
    assert "args.who" in text_of(missing)
    extra = call(server, "do_greet_someone", who="x", cmd="/bin/sh")
    assert extra.is_error
    assert "args.cmd" in text_of(extra)
    with server.client() as http:
        made = [r["args"] for r in http.get("/payloads").json() if r.get("action")]
    assert not [args for args in made if args.get("who") in ("x", "Robert'); DROP TABLE")]


def test_an_action_tools_secret_argument_is_masked(server: Server) -> None:
    secret = "s3cret-key-for-no-model"
    result = call(server, "do_login", key=secret)
    assert facts(result)["output"] == "key=***\n"
    assert secret not in text_of(result)
    assert secret not in str(result.structured_content)


def test_a_read_token_neither_sees_nor_calls_action_tools(server: Server) -> None:
    assert not ACTION_TOOLS & set(listed_tools(server, READ_SECRET))
    refused = call(server, "do_greet_someone", READ_SECRET, who="viewer")
    assert refused.is_error
    assert "scope read" in text_of(refused)
    with server.client() as http:
        assert not [
            r for r in http.get("/payloads").json() if (r.get("args") or {}).get("who") == "viewer"
        ]


def test_a_token_limited_to_actions_gets_its_action_tools_only(server: Server) -> None:
    assert set(listed_tools(server, BUTTON_SECRET)) == {"do_greet_someone"}
    assert facts(call(server, "do_greet_someone", BUTTON_SECRET, who="button"))["exit_code"] == 0
    refused = call(server, "run", BUTTON_SECRET, cmd="echo", params=["raw"])
    assert refused.is_error
    assert "only run its actions" in text_of(refused)
    hidden = call(server, "do_login", BUTTON_SECRET, key="k")
    assert hidden.is_error
    assert "do_login" in text_of(hidden)


def test_output_is_bounded_head_and_tail(server: Server) -> None:
    result = call(server, "run", cmd="seq", params=["20000"])
    answer = facts(result)
    assert answer["exit_code"] == 0
    shown = answer["output"]
    assert shown.startswith("1\n2\n3\n")
    assert shown.endswith("19999\n20000\n")
    assert answer["output_omitted"] > 0
    assert len(shown.encode()) <= MAX_OUTPUT + 64
    assert len(text_of(result).encode()) <= MAX_OUTPUT + 512
    # The rest is there to read, page by page, within the same bound.
    page = facts(call(server, "output", id=answer["id"], stream="stdout", offset=0))
    assert len(page["data"].encode()) == MAX_OUTPUT
    assert page["more"]
    after = facts(
        call(server, "output", id=answer["id"], stream="stdout", offset=page["next_offset"])
    )
    whole = "".join(f"{n}\n" for n in range(1, 20001))
    assert page["data"] + after["data"] == whole[: page["next_offset"] + len(after["data"])]


def test_secret_values_are_masked(server: Server) -> None:
    secret = "hunter2-not-for-models"
    result = call(
        server,
        "run",
        cmd="sh",
        params=["-c", 'echo "key=$API_KEY"'],
        secret_env={"API_KEY": secret},
    )
    assert facts(result)["output"] == "key=***\n"
    assert secret not in text_of(result)
    assert secret not in str(result.structured_content)


@pytest.mark.slow  # a server or a bridge process of its own
def test_the_stdio_bridge_relays_to_the_endpoint(server: Server) -> None:
    pericles = shutil.which("pericles", path=str(Path(sys.executable).parent))
    assert pericles is not None
    env = {"PATH": os.environ["PATH"], "PERICLES_TOKEN": READ_SECRET}
    parameters = StdioServerParameters(
        command=pericles, args=["mcp-stdio", "--server", server.url], env=env
    )
    theirs = facts(call(server, "run", cmd="echo", params=["bridged"]))

    async def scenario() -> tuple[set[str], CallToolResult]:
        async with Client(parameters) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            return names, await client.call_tool("wait", {"id": theirs["id"]})

    names, waited = asyncio.run(scenario())
    assert names == READ_TOOLS
    assert facts(waited)["output"] == "bridged\n"


README = Path(__file__).resolve().parent.parent / "README.md"
README_URL = "http://127.0.0.1:8000"


def readme_client_configs() -> list[dict[str, Any]]:
    """The client configurations the README's MCP section shows, in their order."""
    section = README.read_text().split("## AI agents: the MCP endpoint", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"^```json\n(.*?)^```", section, re.S | re.M)
    return [json.loads(block)["mcpServers"]["pericles"] for block in blocks]


@pytest.mark.slow  # a server or a bridge process of its own
def test_the_readmes_client_configurations_connect(server: Server) -> None:
    over_http, over_stdio = readme_client_configs()
    assert over_http["type"] == "http"
    url = over_http["url"].replace(README_URL, server.url)
    headers = {
        name: value.replace("${PERICLES_TOKEN}", READ_SECRET)
        for name, value in over_http["headers"].items()
    }
    command = shutil.which(over_stdio["command"], path=str(Path(sys.executable).parent))
    assert command is not None
    args = [arg.replace(README_URL, server.url) for arg in over_stdio["args"]]
    env = {"PATH": os.environ["PATH"], **over_stdio["env"], "PERICLES_TOKEN": READ_SECRET}

    async def both() -> tuple[set[str], set[str]]:
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            by_http = {tool.name for tool in (await client.list_tools()).tools}
        parameters = StdioServerParameters(command=command, args=args, env=env)
        async with Client(parameters) as client:
            by_stdio = {tool.name for tool in (await client.list_tools()).tools}
        return by_http, by_stdio

    assert asyncio.run(both()) == (READ_TOOLS, READ_TOOLS)


def test_a_request_needs_no_session_any_replica_can_answer(server: Server) -> None:
    """Stateless: a lone tools/call, with no session opened before it, is answered."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "run", "arguments": {"cmd": "echo", "params": ["lone"]}},
    }
    with server.client() as http:
        response = http.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers
    assert response.json()["result"]["structuredContent"]["output"] == "lone\n"


def _lone_call(marker: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "run", "arguments": {"cmd": "echo", "params": [marker]}},
    }


_MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}


@pytest.mark.parametrize(
    ("headers", "problem_type"),
    [
        ({"Host": "evil.example"}, "/problems/host-not-admitted"),
        ({"Host": "127.0.0.1.nip.io:8000"}, "/problems/host-not-admitted"),
        ({"Origin": "https://evil.example"}, "/problems/cross-site-refused"),
    ],
)
def test_the_host_and_origin_rules_guard_mcp_as_every_route(
    server: Server, headers: dict[str, str], problem_type: str
) -> None:
    """P8's middleware answers /mcp, with the problem it answers any other route."""
    with server.client() as http:
        refused = http.post("/mcp", json=_lone_call("rebound"), headers={**_MCP_HEADERS, **headers})
        elsewhere = http.post("/payloads", json={"cmd": "echo"}, headers=headers)
        ran = [r for r in http.get("/payloads").json() if r["params"] == ["rebound"]]
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == problem_type
    assert refused.json() == elsewhere.json()
    assert not ran


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:{port}"])
def test_an_admitted_host_reaches_mcp(server: Server, host: str) -> None:
    headers = {**_MCP_HEADERS, "Host": host.format(port=server.port)}
    origin = {"Origin": f"http://{headers['Host']}"}
    with server.client() as http:
        response = http.post("/mcp", json=_lone_call("admitted"), headers={**headers, **origin})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"]["output"] == "admitted\n"


def test_only_post_is_served_and_requests_are_counted(server: Server) -> None:
    with server.client() as http:
        for method in ("GET", "DELETE"):
            response = http.request(method, "/mcp", headers={"Accept": "text/event-stream"})
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"
        metrics = http.get("/metrics").text
    assert 'method="GET",route="/mcp"' in metrics


@pytest.mark.slow  # a server or a bridge process of its own
def test_shutdown_with_a_tool_call_in_flight_answers_it_and_stops_its_process(
    tmp_path: Path,
) -> None:
    """A long `run` (its wait is `wait`'s: Service.wait) answers once SIGTERM comes."""
    server = start_server("--mcp")
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    answers: list[CallToolResult] = []
    failures: list[BaseException] = []

    async def long_call() -> None:
        async with Client(f"{server.url}/mcp") as client:
            # Listed first: the client reads tools' output schemas from the list, and would
            # ask for it after the answer, when the server is gone.
            await client.list_tools()
            arguments = {"cmd": "head", "params": ["-n1", str(gate)], "wait": 120}
            answers.append(await client.call_tool("run", arguments))

    def in_thread() -> None:
        try:
            asyncio.run(long_call())
        except BaseException as exc:  # noted: the answer must have come before any of it
            failures.append(exc)

    caller = threading.Thread(target=in_thread, daemon=True)
    caller.start()
    try:
        with server.client() as http:
            # Working means the call has reached its wait: it started the payload first.
            pid = wait_until(
                lambda: next(
                    (r["pid"] for r in http.get("/payloads").json() if r.get("pid")), None
                ),
                what="the payload to start",
            )
        # Within the server's own bounds: the helper fails the test past its timeout.
        assert server.stop(timeout=20) == 0
    finally:
        server.stop()
        release_all(gate, lambda: True)  # a reader left by a failure goes on
    caller.join(30)
    assert not caller.is_alive()
    assert answers, failures
    answer = facts(answers[0])
    assert (answer["status"], answer["exit_code"], answer["server_stopping"]) == (
        "working",
        None,
        True,
    )
    assert "shutting down" in text_of(answers[0])
    assert "Traceback" not in server.log()
    assert " 500" not in server.log()
    # The payload's process went with the server: nothing left running for nobody to see.
    assert pid not in [p.pid for p in processes()]


@pytest.mark.slow  # a server or a bridge process of its own
def test_paging_output_steps_over_what_the_store_dropped() -> None:
    with running_server("--mcp", "--max-output", "2048", "--mcp-max-output", "1024") as server:
        whole = "".join(f"{n}\n" for n in range(1, 5001))
        answer = facts(call(server, "run", cmd="seq", params=["5000"]))
        assert answer["output"].startswith("1\n2\n")
        assert answer["output"].endswith("4999\n5000\n")
        assert answer["output_omitted"] >= len(whole) - 2048
        read, dropped, offset, calls = "", 0, 0, 0
        while True:
            page = facts(call(server, "output", id=answer["id"], stream="stdout", offset=offset))
            read, dropped, offset, calls = (
                read + page["data"],
                dropped + page["dropped"],
                page["next_offset"],
                calls + 1,
            )
            if not page["more"]:
                break
            assert calls < 10, "paging must not crawl through the dropped stretch"
    assert read == whole[:1024] + whole[-1024:]
    assert dropped == len(whole) - 2048
    assert offset == len(whole)
