"""Settings: one object, from flags > `PERICLES_*` environment variables > defaults.

Built once by an entry point and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


def _default_max_running() -> int:
    return 4 * (os.cpu_count() or 1)


Cap = Annotated[int | None, Field(ge=0)]

#: The store URL schemes known; `pericles.store.open_store` maps each to its backend.
STORE_SCHEMES = ("memory", "sqlite", "redis")


def _store_url(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError(
            "expected memory://, sqlite:///PATH (sqlite:////abs/path.db) or redis://HOST:PORT/DB"
        )
    return url


def _callback_allow(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            if not value or any(c in value for c in "/:@ ") or value.startswith("."):
                raise ValueError(
                    f"{value!r} is neither a CIDR (10.0.0.0/8, ::1/128) nor a host name"
                ) from None
    return values


def _callback_urls(values: list[str]) -> list[str]:
    for value in values:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an absolute http:// or https:// URL")
    return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PERICLES_",
        extra="forbid",
    )

    host: Annotated[str, Field(description="Address to listen on")] = "127.0.0.1"
    port: Annotated[
        int,
        Field(
            ge=0,
            le=65535,
            description="Port to listen on (0: any free)",
            json_schema_extra={"metavar": "PORT"},
        ),
    ] = 8000
    store: Annotated[
        str,
        AfterValidator(_store_url),
        Field(
            description="Where records live: memory://, sqlite:////abs/path.db to keep them, "
            "or redis://HOST:PORT/DB to share them between API replicas and workers",
            json_schema_extra={"metavar": "URL"},
        ),
    ] = "memory://"
    runner: Annotated[
        Literal["local", "celery"],
        Field(
            description="Where payloads run: local (children of this server) or celery "
            "(pericles worker processes on any host; needs a redis:// store, also the broker)"
        ),
    ] = "local"
    secrets_key_file: Annotated[
        Path | None,
        Field(
            description="File holding a key (32 characters or more), the same on every API "
            "replica and worker: with --runner celery, secret_env values cross the broker "
            "encrypted with it, in the payload's message only; without it they are refused"
        ),
    ] = None
    heartbeat: Annotated[
        float,
        Field(gt=0, description="celery: seconds between a worker's liveness renewals"),
    ] = 1.0
    liveness_ttl: Annotated[
        float,
        Field(gt=0, description="celery: seconds without a renewal before a payload is lost"),
    ] = 5.0
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
    ui: Annotated[bool, Field(description="Serve the web dashboard at /")] = True
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
    payload_path: Annotated[
        str | None,
        Field(
            description="PATH payloads get and bare commands are looked up on (default: "
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, or the server's "
            "with --inherit-env); under a policy a payload sets its own only if its rule "
            "lists PATH"
        ),
    ] = None
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
    allow: Annotated[
        list[str],
        Field(
            description="Repeatable: a command that may run (path, bare name or wildcard "
            "pattern, matched on the resolved file); with --policy, adds to its rules"
        ),
    ] = []
    policy: Annotated[
        str | None, Field(description="TOML file of command rules (see README); none: any")
    ] = None
    actions: Annotated[
        str | None,
        Field(
            description="TOML file of [[action]] tables: named commands with typed arguments "
            "(may be the --policy file); SIGHUP reloads it"
        ),
    ] = None
    containment: Annotated[
        Literal["auto", "cgroup", "session"],
        Field(
            description="How a payload's processes are kept together and killed: one cgroup "
            "v2 each (cgroup), process group and session only (session), or cgroup where it "
            "can be created (auto)"
        ),
    ] = "auto"
    run_as: Annotated[
        str | None,
        Field(
            description="User (and group) payloads run as; supplementary groups cleared",
            json_schema_extra={"metavar": "USER[:GROUP]"},
        ),
    ] = None

    # -- exposure: who may call, over what, with how much ------------------------------------
    token: Annotated[
        SecretStr | None,
        Field(
            description="Bearer token with scope run, named 'default' (prefer --tokens-file: "
            "a flag shows in ps)"
        ),
    ] = None
    tokens_file: Annotated[
        Path | None,
        Field(description="TOML file of [[token]] tables with name, secret, scope (read|run)"),
    ] = None
    insecure: Annotated[
        bool, Field(description="Allow listening on a non-loopback address without any token")
    ] = False
    tls_cert: Annotated[Path | None, Field(description="PEM certificate chain: serve HTTPS")] = None
    tls_key: Annotated[Path | None, Field(description="PEM private key of --tls-cert")] = None
    cors_origin: Annotated[
        list[str],
        Field(
            description="Origin of a browser page that may call the API (repeatable; CORS "
            "and the cross-site check); none by default"
        ),
    ] = []
    public_host: Annotated[
        list[str],
        Field(
            description="Repeatable: a Host name clients reach the server by, beyond loopback "
            "and the address a connection arrives on (others get 403: DNS rebinding guard)"
        ),
    ] = []
    mcp: Annotated[
        bool,
        Field(description="Serve the Model Context Protocol at /mcp, for AI agents (same tokens)"),
    ] = False
    mcp_max_output: Annotated[
        int,
        Field(ge=256, description="Bytes of output an MCP tool answer carries (head and tail)"),
    ] = 16 * 1024
    max_params: Annotated[int, Field(ge=0, description="Most params a payload may have")] = 4096
    max_param_length: Annotated[
        int, Field(ge=1, description="Longest cmd or param, bytes of UTF-8")
    ] = 128 * 1024
    max_env_bytes: Annotated[
        int, Field(ge=0, description="Total bytes of a payload's env names and values")
    ] = 128 * 1024
    max_header_bytes: Annotated[
        int, Field(ge=1024, description="Largest request line plus headers, bytes (431 past it)")
    ] = 16 * 1024
    header_timeout: Annotated[
        float, Field(gt=0, description="Seconds a client has to send a request's headers")
    ] = 10.0
    body_timeout: Annotated[
        float, Field(gt=0, description="Seconds a client has to send a request's whole body")
    ] = 30.0
    max_connections: Annotated[
        int | None,
        Field(
            ge=1,
            description="Open connections at once; past it new ones get a fast 503 (default: "
            "the open-file limit less a reserve for payload pipes)",
        ),
    ] = None
    keep_alive_timeout: Annotated[
        int, Field(ge=1, description="Seconds an idle connection stays open")
    ] = 5

    # -- callbacks: telling other systems when a payload starts or ends ---------------------
    callback_url: Annotated[
        list[str],
        AfterValidator(_callback_urls),
        Field(
            description="Repeatable: a URL told of every payload's end (signed POST)",
            json_schema_extra={"metavar": "URL"},
        ),
    ] = []
    callback_secret: Annotated[
        SecretStr | None,
        Field(description="Key of the callbacks' Pericles-Signature (HMAC-SHA256); none: unsigned"),
    ] = None
    callback_retries: Annotated[
        int, Field(ge=0, le=100, description="Retries of a callback after the first attempt")
    ] = 8
    callback_backoff: Annotated[
        float,
        Field(
            gt=0,
            le=600,
            description="Seconds before a callback's first retry; doubles (with jitter) up to "
            "10 minutes, Retry-After wins",
        ),
    ] = 2.0
    callback_timeout: Annotated[
        float, Field(gt=0, le=600, description="Seconds one callback attempt may take")
    ] = 10.0
    callback_concurrency: Annotated[
        int, Field(ge=1, le=1024, description="Callbacks sent at once; the others wait")
    ] = 16
    callback_allow: Annotated[
        list[str],
        AfterValidator(_callback_allow),
        Field(
            description="Repeatable: a CIDR or host name callbacks may reach although private, "
            "loopback, link-local or multicast",
            json_schema_extra={"metavar": "CIDR|HOST"},
        ),
    ] = []

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        return self
