"""Where processes run: `local` (this host, through `pericles.process`)."""

from pericles.runner.base import Execution, Exited, Output, Runner, StartFailed, check_target

__all__ = ["Execution", "Exited", "Output", "Runner", "StartFailed", "check_target"]
