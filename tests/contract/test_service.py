"""The service in-process, over a memory store and a fake runner: its rules, fast.

The fake runner starts nothing: each execution waits for the test to say how it ends, so
the order of events is the test's, not a scheduler's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pericles.errors import InvalidSignal, PolicyDenied
from pericles.model import Payload, PayloadSpec, Resolved, Status, utcnow
from pericles.policy import Policy, Rule
from pericles.runner import Execution, Exited, Output, Runner, StartFailed, check_target
from pericles.runner.base import Event
from pericles.service import Service
from pericles.service.door import DOOR_DEPTH
from pericles.settings import Settings
from pericles.store.memory import MemoryStore

FILES = {
    "/fake/true": Resolved("/fake/true", "aa" * 32),
    "/fake/echo": Resolved("/fake/echo", None),
}


def make_spec(**fields: Any) -> PayloadSpec:
    return PayloadSpec.model_validate(fields)


class FakeExecution(Execution):
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.events_queue: asyncio.Queue[Event] = asyncio.Queue()
        self.signals: list[str] = []
        self.ended = False

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.events_queue.get()
            yield event
            if isinstance(event, Exited):
                self.ended = True
                return

    def end(self, exit_code: int | None, signal: str | None = None) -> None:
        self.events_queue.put_nowait(Exited(exit_code, signal))

    async def terminate(self, grace: float) -> None:
        if not self.ended:
            self.end(None, "SIGTERM")

    def send_signal(self, name: str) -> bool:
        self.signals.append(name)
        return not self.ended

    def write_stdin(self, data: bytes, close: bool = False) -> None:
        raise AssertionError("not used here")


class FakeRunner(Runner):
    def __init__(self) -> None:
        self.files = dict(FILES)
        self.started: dict[str, FakeExecution] = {}

    async def identify(self, spec: PayloadSpec) -> Resolved:
        try:
            return self.files[spec.cmd]
        except KeyError:
            raise StartFailed("No such file or directory") from None

    async def start(
        self, payload_id: str, spec: PayloadSpec, resolved: Resolved | None = None
    ) -> Execution:
        now = await self.identify(spec)
        if resolved is not None:
            check_target(resolved, now)
        execution = self.started[payload_id] = FakeExecution(1000 + len(self.started))
        return execution


Body = Callable[[Service, FakeRunner], Awaitable[None]]


def serve(body: Body, policy: Policy | None = None, **settings: Any) -> None:
    async def run() -> None:
        runner = FakeRunner()
        store = MemoryStore(1024)
        await store.open()
        service = Service(Settings(**settings), store, runner, policy=policy)
        await service.recover()
        try:
            await body(service, runner)
        finally:
            await service.shutdown(1.0)

    asyncio.run(asyncio.wait_for(run(), 10))


async def state_of(service: Service, payload_id: str, wanted: Status) -> Payload:
    """The record once in `wanted`: the service's own waiting, never a sleep."""
    async for item in service.follow(payload_id, {}, heartbeat=5):
        if isinstance(item, Payload) and item.state is wanted:
            return item
    record = await service.get(payload_id)
    assert record.state is wanted, record.status
    return record


def test_a_payload_runs_reports_output_and_ends() -> None:
    async def body(service: Service, runner: FakeRunner) -> None:
        record = await service.create(make_spec(cmd="/fake/true"))
        assert record.state is Status.PENDING
        await state_of(service, record.id, Status.WORKING)
        execution = runner.started[record.id]
        execution.events_queue.put_nowait(Output("stdout", b"hi\n"))
        execution.end(0)
        done = await service.wait(record.id, 5)
        assert (done.status, done.exit_code, done.stdout_bytes) == ("finished", 0, 3)
        assert (done.exe, done.exe_sha256) == ("/fake/true", FILES["/fake/true"].sha256)
        assert await service.read_output(record.id, "stdout", 0) == (b"hi\n", 0)

    serve(body)


def test_waits_answer_at_once_when_the_server_begins_to_stop() -> None:
    async def body(service: Service, runner: FakeRunner) -> None:
        record = await service.create(make_spec(cmd="/fake/true"))
        await state_of(service, record.id, Status.WORKING)
        waiting = asyncio.create_task(service.wait(record.id, 60))
        # Until it waits on the record's changes: nothing else would wake it.
        changes = service._records.changes
        deadline = asyncio.get_running_loop().time() + 5
        while not changes.waiting(record.id):
            assert asyncio.get_running_loop().time() < deadline, "the wait never began"
            await asyncio.sleep(0.001)
        assert not waiting.done()
        service.stop_waiting()
        answered = await asyncio.wait_for(waiting, 5)
        assert answered.state is Status.WORKING
        late = await asyncio.wait_for(service.wait(record.id, 60), 5)
        assert late.state is Status.WORKING

    serve(body)


def test_rule_caps_then_server_caps_then_defaults() -> None:
    rules = (Rule("short", "/fake/true", max_timeout=60), Rule("any", "/fake/echo"))

    async def body(service: Service, runner: FakeRunner) -> None:
        assert (await service.create(make_spec(cmd="/fake/true"))).timeout == 60
        assert (await service.create(make_spec(cmd="/fake/echo"))).timeout == 100
        with pytest.raises(PolicyDenied, match="over the rule's 60"):
            await service.create(make_spec(cmd="/fake/true", timeout=80))

    serve(body, Policy(rules), max_timeout=100)


def test_a_file_changed_while_pending_does_not_start() -> None:
    async def body(service: Service, runner: FakeRunner) -> None:
        first = await service.create(make_spec(cmd="/fake/true"))
        second = await service.create(make_spec(cmd="/fake/true"))
        await state_of(service, first.id, Status.WORKING)
        runner.files["/fake/true"] = dataclasses.replace(FILES["/fake/true"], sha256="bb" * 32)
        runner.started[first.id].end(0)
        done = await service.wait(second.id, 5)
        assert done.status.startswith("error:start('/fake/true':refused by the command policy")
        assert "is not the file admitted" in done.status
        assert second.id not in runner.started

    serve(body, Policy((Rule("true", "/fake/true"),)), max_running=1)


def test_cancel_signals_and_pause() -> None:
    async def body(service: Service, runner: FakeRunner) -> None:
        running = await service.create(make_spec(cmd="/fake/true"))
        waiting = await service.create(make_spec(cmd="/fake/true"))
        assert (await service.get(waiting.id)).queue_position == 1
        await state_of(service, running.id, Status.WORKING)
        assert (await service.cancel(waiting.id)).state is Status.CANCELLED
        assert waiting.id not in runner.started
        assert (await service.send_signal(running.id, "stop")).state is Status.PAUSED
        assert (await service.send_signal(running.id, "SIGCONT")).state is Status.WORKING
        with pytest.raises(InvalidSignal):
            await service.send_signal(running.id, "SIGSEGV")
        assert runner.started[running.id].signals == ["SIGSTOP", "SIGCONT"]
        cancelled = await service.cancel(running.id)
        assert (cancelled.status, cancelled.signal) == ("cancelled", "SIGTERM")

    serve(body, max_running=1)


def test_a_deep_queue_holds_new_payloads_until_one_starts() -> None:
    async def body(service: Service, runner: FakeRunner) -> None:
        running = await service.create(make_spec(cmd="/fake/true"))
        for _ in range(DOOR_DEPTH):
            await service.create(make_spec(cmd="/fake/true"))
        await state_of(service, running.id, Status.WORKING)
        held = asyncio.create_task(service.create(make_spec(cmd="/fake/true")))
        await asyncio.wait({held}, timeout=0.05)
        assert not held.done(), "not accepted while the queue is this deep"
        runner.started[running.id].end(0)  # one starts: the held one gets in
        assert (await held).state is Status.PENDING
        assert service.pending_count == DOOR_DEPTH
        # Nothing starts for DOOR_WAIT: the slot is held by a long payload, so the queue is
        # a plain queue again (up to --max-pending) until the next start.
        assert (await service.create(make_spec(cmd="/fake/true"))).state is Status.PENDING
        again = await asyncio.wait_for(service.create(make_spec(cmd="/fake/true")), 0.5)
        assert again.state is Status.PENDING
        assert service.pending_count == DOOR_DEPTH + 2

    serve(body, max_running=1)


def test_recovery_loses_running_ones_and_queues_pending_ones() -> None:
    async def run() -> None:
        store = MemoryStore(1024)
        await store.open()
        spec = make_spec(cmd="/fake/true")
        was_running = Payload.from_spec(spec, "a" * 32, utcnow())
        await store.add(dataclasses.replace(was_running, status="working", pid=1))
        pending = Payload.from_spec(spec, "b" * 32, utcnow())
        await store.add(pending)
        runner = FakeRunner()
        service = Service(Settings(), store, runner)
        await service.recover()
        assert (await service.get(was_running.id)).state is Status.LOST
        await state_of(service, pending.id, Status.WORKING)
        runner.started[pending.id].end(0)
        assert (await service.wait(pending.id, 5)).state is Status.FINISHED
        await service.shutdown(1.0)

    asyncio.run(asyncio.wait_for(run(), 10))
