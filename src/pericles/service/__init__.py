"""The service: the one owner of lifecycle rules, in a package of small parts.

- `core`: the facade the API calls (`Service`): create, read, follow, cancel, signal.
- `records`: the one write path for records, their publication, and retention.
- `run`: a payload from leaving the queue until it ends (`Run`).
- `recovery`: what a server finds in a durable store at start.
"""

from pericles.service.core import Service

__all__ = ["Service"]
