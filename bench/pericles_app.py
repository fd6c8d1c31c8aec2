"""The Pericles app as a module-level ASGI object, for servers that import an app by name.

`granian pericles_app:app` and `uvicorn pericles_app:app` serve what `handler-serve` serves:
the settings come from `PERICLES_*` variables and the defaults, as in the entry point. The
app opens and closes its server (store, runner, service) in its lifespan.
"""

from __future__ import annotations

from pericles.server import asgi_app
from pericles.settings import Settings

app = asgi_app(Settings())
