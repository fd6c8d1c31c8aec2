"""The web dashboard at `/` and the offline API docs at `/docs`.

Both are static pages that talk to the public JSON/SSE API like any other client; this
package only serves files. The dashboard's own files are in `static/`; Swagger UI's come
from the `fastapi-offline` package, so nothing is loaded from a CDN.
"""

from pericles.ui.routes import CSP, install

__all__ = ["CSP", "install"]
