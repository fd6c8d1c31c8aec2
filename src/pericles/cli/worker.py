"""`pericles worker`: run payloads taken from a Redis broker (see `pericles.worker`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

# Settings (pydantic-settings, about 80 ms to import) only when a worker starts: every
# `pericles` command registers this one, and `pericles --help` should not pay for it.
_MiB = 1024 * 1024


#: handler-serve's help for the same settings (`Settings` field descriptions), written out
#: so `--help` need not import Settings; tests/test_cluster.py checks they still agree.
SHARED_HELP = {
    "policy": "TOML file of command rules (see README); none: any",
    "allow": (
        "Repeatable: a command that may run (path, bare name or wildcard pattern, matched on "
        "the resolved file); with --policy, adds to its rules"
    ),
    "secrets_key_file": (
        "File holding a key (32 characters or more), the same on every API replica and "
        "worker: with --runner celery, secret_env values cross the broker encrypted with "
        "it, in the payload's message only; without it they are refused"
    ),
}


def worker(
    broker: Annotated[
        str,
        typer.Option(help="Redis URL: the broker and the store, e.g. redis://HOST:6379/0"),
    ],
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to take payloads from")
    ] = "default",
    slots: Annotated[
        int, typer.Option(min=1, help="Payloads this worker process runs at once")
    ] = 8,
    hostname: Annotated[
        str | None,
        typer.Option(help="Name of this host in records (default: the system's host name)"),
    ] = None,
    heartbeat: Annotated[
        float, typer.Option(min=0.05, help="Seconds between liveness renewals")
    ] = 1.0,
    liveness_ttl: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds without a renewal before a payload is lost"),
    ] = 5.0,
    max_output: Annotated[
        int, typer.Option(min=0, help="Bytes of output kept per stream (head and tail)")
    ] = _MiB,
    kill_grace: Annotated[
        float, typer.Option(min=0, help="Seconds from SIGTERM to SIGKILL on cancel, timeout")
    ] = 5.0,
    inherit_env: Annotated[
        bool, typer.Option(help="Give payloads this worker's environment, not PATH only")
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help=SHARED_HELP["policy"]
            + "; the same file as the API's: each payload is judged again "
            "here before it starts, and one this policy refuses ends as a start error",
        ),
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option(metavar="CMD", help=SHARED_HELP["allow"])
    ] = None,
    secrets_key_file: Annotated[
        Path | None, typer.Option(metavar="FILE", help=SHARED_HELP["secrets_key_file"])
    ] = None,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info, debug")] = "info",
) -> None:
    """Run payloads queued by `handler-serve --runner celery`, with the same process code."""
    from pydantic import ValidationError

    from pericles import worker as worker_process
    from pericles.settings import Settings

    try:
        settings = Settings(
            store=broker,
            runner="celery",
            heartbeat=heartbeat,
            liveness_ttl=liveness_ttl,
            max_output=max_output,
            kill_grace=kill_grace,
            inherit_env=inherit_env,
            log_level=log_level,
            max_running=0,
            policy=policy,
            allow=allow or [],
            secrets_key_file=secrets_key_file,
        )
    except ValidationError as exc:
        print(f"pericles worker: invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not settings.store.startswith("redis://"):
        print("pericles worker: --broker must be a redis:// URL", file=sys.stderr)
        raise SystemExit(2)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    worker_process.run(settings, names or ["default"], slots, hostname)
