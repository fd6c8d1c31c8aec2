"""Pericles: run and watch processes over HTTP."""

__version__ = "0.1.0"
