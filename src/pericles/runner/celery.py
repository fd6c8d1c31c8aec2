"""The celery runner: payloads run on `pericles worker` processes, on any host.

The API side (this class) only sends: a Celery message per payload to start, and control
messages (cancel, signal, stdin) on the channel of the worker that runs it. Redis is the
broker and the store. There is no Celery result backend: a payload's record is its result.

Celery settings chosen here (measured on a prototype, see README "Many machines"):

- acks early, `worker_prefetch_multiplier=1`, `worker_disable_prefetch`: a message is
  acknowledged when a worker takes it, so a payload that runs for hours is never delivered
  again; a busy worker takes no message it cannot start. The start guard (`ClaimingService.take`)
  makes a second delivery harmless anyway.
- `visibility_timeout`: a message taken by a worker that died before acknowledging it goes
  back to its queue after that many seconds.
- never `revoke(terminate=True)`: it signals the pool, not the payload's process group.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from cryptography.fernet import Fernet, InvalidToken
from kombu import serialization

from pericles.errors import FieldError, SecretsKeyError, ServiceUnavailable
from pericles.model import DEFAULT_QUEUE, Payload, PayloadSpec, Resolved
from pericles.runner.base import Execution
from pericles.runner.local import LocalRunner

log = logging.getLogger("pericles.runner")

#: The one Celery task: run the payload whose id it is given.
TASK = "pericles.run"
#: Seconds before a message taken by a worker that never acknowledged it is delivered again.
VISIBILITY_TIMEOUT = 300


def make_app(broker: str) -> Celery:
    """The Celery app API replicas send with and workers consume with."""
    app = Celery("pericles", broker=broker, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="default",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=True,
    )
    return app


#: Who sent a message, as Celery's `origin` header says it (`gen<pid>@<host>`).
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class Message:
    """A payload's Celery message: the Redis list it goes on (its queue), and its text."""

    queue: str
    text: str


#: Shortest key text accepted in --secrets-key-file.
MIN_KEY_CHARS = 32


class Sealer:
    """Encrypts a payload's secret_env values for its Celery message, and opens them on the
    worker. The values never enter the store: they cross Redis only inside the message,
    encrypted and authenticated (Fernet: AES-128-CBC and HMAC-SHA256), and a worker deletes
    the message when it takes it (acks early)."""

    def __init__(self, key_file: Path) -> None:
        try:
            text = key_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsKeyError(f"--secrets-key-file {key_file}: {exc}") from exc
        if len(text) < MIN_KEY_CHARS:
            raise SecretsKeyError(
                f"--secrets-key-file {key_file}: the key must be {MIN_KEY_CHARS} characters "
                "or more (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        # Any text of enough entropy: its SHA-256 is the 32 bytes Fernet splits in two keys.
        digest = hashlib.sha256(text.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, payload_id: str, values: Mapping[str, str]) -> str:
        # The payload id goes in: a sealed value copied into another payload's message fails.
        body = json.dumps({"id": payload_id, "env": dict(values)}).encode()
        return self._fernet.encrypt(body).decode()

    def open(self, payload_id: str, sealed: str) -> dict[str, str]:
        """The values; raises `SecretsKeyError` when they cannot be read here."""
        try:
            body = json.loads(self._fernet.decrypt(sealed.encode()))
        except (InvalidToken, ValueError) as exc:
            raise SecretsKeyError("not sealed with this worker's --secrets-key-file") from exc
        env = body.get("env") if isinstance(body, dict) else None
        if body.get("id") != payload_id or not isinstance(env, dict):
            raise SecretsKeyError("sealed for another payload")
        return {str(k): str(v) for k, v in env.items()}


def control_channel(worker: str) -> str:
    """The channel a worker process listens on for its payloads' cancel, signal and stdin."""
    return f"pericles:control:{worker}"


class CeleryRunner(LocalRunner):
    """Checks specs like the local runner (the API host resolves what the policy needs);
    starts nothing here: `submit` queues a payload for the workers."""

    def __init__(
        self,
        broker: str,
        inherit_env: bool = False,
        max_stdin: int = 1024 * 1024,
        sealer: Sealer | None = None,
    ):
        super().__init__(inherit_env, max_stdin)
        self._sealer = sealer
        self._app = make_app(broker)
        self._redis: Any = aioredis.from_url(broker)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self._redis.aclose()
        self._app.close()

    def host_boot(self) -> str | None:
        return None

    def check(self, spec: PayloadSpec) -> list[FieldError]:
        errors = super().check(spec)
        if spec.secret_env and self._sealer is None:
            reason = (
                "needs --secrets-key-file with --runner celery (its values cross the broker "
                "encrypted with that key, the same on API replicas and workers)"
            )
            errors.append(FieldError("secret_env", reason))
        return errors

    async def start(
        self, payload_id: str, spec: PayloadSpec, resolved: Resolved | None = None
    ) -> Execution:
        raise RuntimeError("with --runner celery, payloads start on pericles workers")

    async def ping(self) -> None:
        await self._redis.ping()

    def message(self, record: Payload, secrets: Mapping[str, str] | None = None) -> Message:
        """The Celery message that queues `record` for the workers of its queue, as the list
        to push it on and its text; its `secrets` (secret_env values) go sealed in it.

        Celery builds the task message (`as_task_v2`: headers and body, protocol 2); it is
        framed here as kombu's Redis transport frames a message published to the default
        exchange (routing key = queue = the Redis list), so the store can push it in the
        same step that stores the record: one round trip per submit, and never a record
        stored but not queued. Priority 0 only: the payload's own priority orders nothing
        across workers (as with `send_task(priority=None)` before).
        """
        kwargs: dict[str, str] = {}
        if secrets:
            if self._sealer is None:  # check() refused such specs already
                raise ServiceUnavailable("secret_env needs --secrets-key-file", retry_after=None)
            kwargs["sealed"] = self._sealer.seal(record.id, secrets)
        queue = record.queue or DEFAULT_QUEUE
        # The reprs given: Celery's own (saferepr) cost a tenth of a submit, and a sealed
        # value has nothing to show.
        headers, properties, body, _ = self._app.amqp.as_task_v2(
            record.id,
            TASK,
            args=[record.id],
            kwargs=kwargs,
            ignore_result=True,
            origin=_ORIGIN,
            argsrepr=f"['{record.id}']",
            kwargsrepr="{'sealed': '...'}" if kwargs else "{}",
        )
        content_type, encoding, data = serialization.dumps(body, serializer="json")  # type: ignore[no-untyped-call]
        framed = {
            "body": base64.b64encode(data.encode() if isinstance(data, str) else data).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return Message(queue, json.dumps(framed))

    async def stop(self, record: Payload) -> None:
        """Ask the worker running `record` to stop it (the caller also sets the store's stop
        flag, which reaches a worker that missed the message at its next heartbeat)."""
        await self._publish(record, _message("cancel", record.id))

    async def signal(self, record: Payload, name: str) -> None:
        await self._publish(record, _message("signal", record.id, signal=name))

    async def stdin(self, record: Payload, data: bytes, close: bool) -> None:
        text = base64.b64encode(data).decode()
        await self._publish(record, _message("stdin", record.id, data=text, close=close))

    async def _publish(self, record: Payload, message: str) -> None:
        await self._redis.publish(control_channel(record.worker or ""), message)


def _message(op: str, payload_id: str, **fields: Any) -> str:
    return json.dumps({"op": op, "id": payload_id, **fields})
