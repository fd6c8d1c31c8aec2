"""The service: the one owner of lifecycle rules, in a package of small parts.

- `core`: the facade the API calls (`Service`): create, read, follow, cancel, signal.
- `records`: the one write path for records, their publication, and retention.
- `run`: a payload from leaving the queue until it ends (`Run`).
- `recovery`: what a server finds in a durable store at start.
- `door`: where a POST waits while the queue is deep (`Door`).
- `claiming`: the service in a celery worker (`ClaimingService.take`).
- `remote`: an API replica whose payloads run on celery workers (`RemoteService`).
"""

from pericles.service.core import Service

__all__ = ["Service"]
