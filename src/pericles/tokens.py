"""Bearer tokens: where they come from, and which one a request presents.

A token has a name (what records and logs may show), a secret (what they never show) and a
scope: `read` may call GET endpoints and follow event feeds, `run` may call everything.
Tokens come from `--token` (one, named "default", scope `run`) and from `--tokens-file`,
a TOML file with one `[[token]]` table per token:

    [[token]]
    name = "ci"
    secret = "..."
    scope = "run"
    callback_secret = "..."   # optional: signs the callbacks of payloads this token creates

    [[token]]
    name = "ops-button"
    secret = "..."
    scope = "run"
    actions = ["backup"]      # may run these named actions and see their payloads, only

This module knows nothing of HTTP: the API layer asks `TokenSet.match` and decides.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

#: Shorter secrets are refused: a guessable token protects nothing.
MIN_SECRET_LENGTH = 16
DEFAULT_NAME = "default"
#: What a token secret found in a log line or a problem body is replaced by.
REDACTED = "[redacted]"


class TokenConfigError(ValueError):
    """The tokens given to the server are unusable; the entry point reports it and exits."""


class Scope(StrEnum):
    #: GET endpoints and event feeds.
    READ = "read"
    #: Everything: create, cancel, signal, write stdin, delete, and what `read` may do.
    RUN = "run"

    def allows(self, needed: Scope) -> bool:
        return self is Scope.RUN or needed is Scope.READ


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    scope: Scope
    # Only a digest is kept, so comparisons take the same time whatever the secret's length.
    digest: bytes
    #: The secret's length and its keyed in-process `hash()`: what `TokenSet.redact` slides
    #: over text to find the secret without keeping it (a hit is confirmed by `digest`).
    length: int = 0
    fingerprint: int = 0
    #: Key of the callbacks of payloads this token created, instead of --callback-secret.
    callback_secret: str | None = None
    #: The named actions this token is limited to; None: not limited.
    actions: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"Token(name={self.name!r}, scope={self.scope.value!r})"

    def sees(self, action: str | None) -> bool:
        """Whether this token may see a payload that `action` made (None: a raw payload)."""
        return self.actions is None or (action is not None and action in self.actions)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def make_token(
    name: str,
    secret: str,
    scope: Scope | str,
    actions: frozenset[str] | None = None,
    callback_secret: str | None = None,
) -> Token:
    if not name or not name.isprintable():
        raise TokenConfigError(f"token name {name!r} must be non-empty printable text")
    if len(secret) < MIN_SECRET_LENGTH or not secret.isprintable() or secret != secret.strip():
        raise TokenConfigError(
            f"token {name!r}: the secret must be at least {MIN_SECRET_LENGTH} printable "
            "characters without surrounding spaces"
        )
    try:
        return Token(
            name,
            Scope(scope),
            _digest(secret),
            len(secret),
            hash(secret),
            actions=actions,
            callback_secret=callback_secret,
        )
    except ValueError:
        raise TokenConfigError(f"token {name!r}: scope must be 'read' or 'run'") from None


class TokenSet:
    """The server's tokens; empty when authentication is off."""

    def __init__(self, tokens: list[Token]) -> None:
        names = [t.name for t in tokens]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise TokenConfigError(f"token names must be unique: {', '.join(duplicates)}")
        if len({t.digest for t in tokens}) != len(tokens):
            raise TokenConfigError("two tokens share one secret")
        self._tokens = tuple(tokens)
        self._fingerprints: dict[int, set[int]] = defaultdict(set)
        for t in tokens:
            self._fingerprints[t.length].add(t.fingerprint)
        self._digests = frozenset(t.digest for t in tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def callback_secrets(self) -> dict[str, str]:
        """Each token's own callback key, by token name (for those that have one)."""
        return {t.name: t.callback_secret for t in self._tokens if t.callback_secret}

    def match(self, presented: str) -> Token | None:
        """The token whose secret is `presented`, or None.

        Every token is compared, with `hmac.compare_digest` on fixed-size digests, and the
        loop never stops early: the time taken says nothing about which token, if any, was
        close or matched.
        """
        digest = _digest(presented)
        found: Token | None = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    def redact(self, text: str) -> str:
        """`text` with every token secret in it replaced by `REDACTED`.

        Secrets are not kept: every window of a secret's length is compared by its keyed
        `hash()`, and a hit is confirmed by SHA-256. A URL may carry a secret
        percent-encoded: when the decoded text holds one, the decoded text is redacted.
        """
        if not self._fingerprints:
            return text
        redacted = self._redact(text)
        if redacted is text and ("%" in text or "+" in text):
            decoded = unquote_plus(text)
            if (found := self._redact(decoded)) is not decoded:
                return found
        return redacted

    def _redact(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for length, fingerprints in self._fingerprints.items():
            for i in range(len(text) - length + 1):
                window = text[i : i + length]
                if hash(window) in fingerprints and _digest(window) in self._digests:
                    spans.append((i, i + length))
        if not spans:
            return text
        out, done = [], 0
        for start, end in sorted(spans):
            if start >= done:  # overlapping windows share the one REDACTED already out
                out += [text[done:start], REDACTED]
            done = max(done, end)
        out.append(text[done:])
        return "".join(out)


def _from_table(index: int, table: Any) -> Token:
    if not isinstance(table, dict):
        raise TokenConfigError(f"token #{index}: must be a table")
    unknown = set(table) - {"name", "secret", "scope", "actions", "callback_secret"}
    if unknown:
        raise TokenConfigError(f"token #{index}: unknown keys {', '.join(sorted(unknown))}")
    name, secret, scope = (table.get(key) for key in ("name", "secret", "scope"))
    if not (isinstance(name, str) and isinstance(secret, str) and isinstance(scope, str)):
        raise TokenConfigError(f"token #{index}: name, secret and scope must all be strings")
    actions = table.get("actions")
    if actions is not None and (
        not isinstance(actions, list) or not all(isinstance(a, str) and a for a in actions)
    ):
        raise TokenConfigError(f"token {name!r}: actions must be a list of action names")
    callback_secret = table.get("callback_secret")
    if callback_secret is not None and (
        not isinstance(callback_secret, str) or not callback_secret
    ):
        raise TokenConfigError(f"token {name!r}: callback_secret must be a non-empty string")
    listed = frozenset(actions) if actions is not None else None
    return make_token(name, secret, scope, listed, callback_secret)


def read_tokens_file(path: Path) -> list[Token]:
    """The `[[token]]` tables of the TOML file at `path`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TokenConfigError(f"cannot read the tokens file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TokenConfigError(f"the tokens file {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"token"}
    if unknown:
        raise TokenConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    tables = data.get("token", [])
    if not isinstance(tables, list) or not tables:
        raise TokenConfigError(f"{path}: expected one or more [[token]] tables")
    return [_from_table(i, table) for i, table in enumerate(tables, 1)]


def load_tokens(token: str | None, tokens_file: Path | None) -> TokenSet:
    """The tokens from `--token` and `--tokens-file`; an empty set when neither is given."""
    tokens = [make_token(DEFAULT_NAME, token, Scope.RUN)] if token is not None else []
    if tokens_file is not None:
        tokens += read_tokens_file(tokens_file)
    return TokenSet(tokens)
