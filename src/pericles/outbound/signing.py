"""The callback signature: `Pericles-Signature: v1=<hex HMAC-SHA256 of "timestamp.body">`.

The timestamp is signed with the body, so a receiver that refuses old timestamps (the
replay window, see the README) cannot be fed a captured delivery again later.
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = "v1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The header value for `body` sent at `timestamp` (Unix seconds, as sent)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether `header` signs `body` at `timestamp` with `secret` (constant-time compare)."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)
