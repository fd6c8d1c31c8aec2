"""The client's TLS context: httpx's default, its CA certificates loaded on first use."""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any


class DeferredTLS(ssl.SSLContext):
    """httpx's default TLS context, its CA certificates loaded at the first TLS handshake.

    The same context as `httpx.create_ssl_context()` (verifying, with certifi's CAs, or
    those of SSL_CERT_FILE or SSL_CERT_DIR), but loading the CAs takes ~20 ms, which a
    client of an http:// server (the default, and `pericles run`) never needs. Every
    handshake goes through `wrap_socket` (sync) or `wrap_bio` (asyncio, TLS in TLS), so
    none can happen before they are loaded.
    """

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        if os.environ.get("SSL_CERT_FILE"):
            self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            self.load_verify_locations(cafile=certifi.where())
        self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load()
        return super().wrap_bio(*args, **kwargs)


def tls_context() -> ssl.SSLContext:
    """What `ssl.create_default_context` makes, but for the CAs (see `DeferredTLS`)."""
    context = DeferredTLS(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    return context
