"""The service as a celery worker runs it: payloads another process created and queued."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from pericles.errors import InvalidSpec, PayloadNotFound
from pericles.model import Payload, Resolved, Status, start_error, utcnow
from pericles.runner import StartFailed
from pericles.service.core import Service
from pericles.service.recovery import spec_of, with_secrets

log = logging.getLogger("pericles.service")


class ClaimingService(Service):
    """A `Service` that also runs payloads it did not create, claiming each first."""

    async def take(
        self,
        payload_id: str,
        worker: str,
        secrets: Mapping[str, str] | None = None,
        missing: str = "did not reach this worker",
    ) -> bool:
        """Run a payload another process created and queued (a celery worker's task), to
        its end; False when it was not ours to run.

        At most once: the first step claims it in the store (one compare-and-set, before
        anything is spawned); only the claimant may then move it. A payload cancelled, lost,
        or claimed already (a message delivered twice) is left alone. A claimant that dies
        leaves it to the reaper, which records it `lost`: it may have started.

        `secrets`: the secret_env values its message carried (never stored), or None and
        why (`missing`). The API that took it admitted it; here this process's own policy
        judges it again (`Admission.again`: a refusal ends it as a start error naming the
        rule), and the file is checked against the path and digest admitted (when a policy
        resolved one).
        """
        try:
            record = await self.store.get(payload_id)
            if record.state is not Status.PENDING or not await self.store.claim(payload_id, worker):
                log.info("payload %s is %s: not starting it", payload_id, record.status)
                return False
        except PayloadNotFound:
            return False
        record = dataclasses.replace(record, worker=worker)
        try:
            spec = with_secrets(record, spec_of(record), secrets, missing)
        except InvalidSpec as exc:
            reason = start_error(record.cmd, str(exc))
            await self._records.move(record, Status.ERROR, status=reason, finished_at=utcnow())
            return True
        try:
            admitted = await self._admission.again(spec, _admitted_file(record), record.created_by)
        except StartFailed as exc:
            reason = start_error(record.cmd, exc.reason)
            await self._records.move(record, Status.ERROR, status=reason, finished_at=utcnow())
            return True
        await self._start(record, admitted).ended()
        return True


def _admitted_file(record: Payload) -> Resolved | None:
    """The file an API admitted for a pending record (its policy resolved it), if any."""
    if record.exe is None:
        return None
    return Resolved(record.exe, record.exe_sha256, record.cwd)
