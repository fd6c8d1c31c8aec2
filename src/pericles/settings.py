"""Settings: one object, from flags > `PERICLES_*` environment variables > defaults.

Built once by an entry point and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


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
    max_output: Annotated[
        int, Field(ge=0, description="Bytes of output kept per stream (head and tail halves)")
    ] = MiB
    max_body: Annotated[int, Field(ge=1, description="Largest request body accepted, bytes")] = MiB
    shutdown_grace: Annotated[
        float,
        Field(ge=0, description="Seconds a payload gets between SIGTERM and SIGKILL at shutdown"),
    ] = 3.0
    log_level: Annotated[str, Field(description="Logging level")] = "info"
