"""Where processes run: `local` (this host, through `pericles.process`)."""

from pericles.runner.base import Execution, Exited, Output, Runner, StartFailed

__all__ = ["Execution", "Exited", "Output", "Runner", "StartFailed"]
