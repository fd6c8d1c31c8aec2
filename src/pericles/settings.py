"""Settings: one object, from flags > `PERICLES_*` environment variables > defaults.

Built once by an entry point and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


def _default_max_running() -> int:
    return 4 * (os.cpu_count() or 1)


Cap = Annotated[int | None, Field(ge=0)]

#: The store URL schemes known; `pericles.store.open_store` maps each to its backend.
STORE_SCHEMES = ("memory", "sqlite")


def _store_url(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError("expected memory:// or sqlite:///PATH (sqlite:////abs/path.db)")
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PERICLES_",
        extra="forbid",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="handler-serve",
    )

    host: Annotated[str, Field(description="Address to listen on")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="Port to listen on (0: any free)")] = (
        8000
    )
    store: Annotated[
        str,
        AfterValidator(_store_url),
        Field(description="Where records live: memory://, or sqlite:////abs/path.db to keep them"),
    ] = "memory://"
    max_output: Annotated[
        int, Field(ge=0, description="Bytes of output kept per stream (head and tail halves)")
    ] = MiB
    max_body: Annotated[int, Field(ge=1, description="Largest request body accepted, bytes")] = MiB
    shutdown_grace: Annotated[
        float,
        Field(ge=0, description="Seconds a payload gets between SIGTERM and SIGKILL at shutdown"),
    ] = 3.0
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"],
        Field(description="Logging level"),
    ] = "info"
    log_format: Annotated[
        Literal["plain", "json"], Field(description="plain lines, or one JSON object a line")
    ] = "plain"
    metrics: Annotated[bool, Field(description="Serve Prometheus metrics at /metrics")] = True
    max_running: Annotated[
        int,
        Field(ge=0, description="Payloads running at once; others wait pending (0: no limit)"),
    ] = Field(default_factory=_default_max_running)
    max_pending: Annotated[
        int, Field(ge=0, description="Payloads waiting at once; beyond it POST answers 503")
    ] = 10_000
    kill_grace: Annotated[
        float,
        Field(ge=0, description="Seconds from SIGTERM to SIGKILL on cancel and timeout"),
    ] = 5.0
    inherit_env: Annotated[
        bool, Field(description="Give payloads the server's environment instead of PATH only")
    ] = False
    max_stdin: Annotated[
        int, Field(ge=0, description="Bytes of stdin a payload may be given or have queued")
    ] = MiB
    keep_finished: Annotated[
        int, Field(ge=0, description="Ended payloads kept; the oldest are forgotten past it")
    ] = 10_000
    keep_for: Annotated[
        float | None, Field(gt=0, description="Seconds an ended payload is kept (default: ever)")
    ] = None
    max_timeout: Annotated[
        float | None,
        Field(gt=0, description="Largest wall timeout a payload may ask; also the default"),
    ] = None
    max_cpu_seconds: Annotated[Cap, Field(description="Cap and default for limits.cpu_seconds")] = (
        None
    )
    max_memory: Annotated[Cap, Field(description="Cap and default for limits.memory_bytes")] = None
    max_processes: Annotated[Cap, Field(description="Cap and default for limits.max_processes")] = (
        None
    )
    max_open_files: Annotated[
        Cap, Field(description="Cap and default for limits.max_open_files")
    ] = None
    max_file_size: Annotated[Cap, Field(description="Cap and default for limits.max_file_size")] = (
        None
    )
