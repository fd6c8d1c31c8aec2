"""The sqlite store's file: its URL, connection settings, schema, forward migrations and the
statements the store runs.

Everything here runs on the store's one database thread, never on the event loop.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from pericles.errors import StoreUnavailable

#: Forward migrations: the statements that take the schema from version N to N + 1 are
#: MIGRATIONS[N]. Append only; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # `seq` is the rowid: creation order, which is the order lists are answered in.
        """CREATE TABLE payloads (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            record TEXT NOT NULL
        )""",
        # The kept output of ended payloads: each stream's head and tail chunks (`part` 0
        # and 1), with their offset in the stream and in the combined output (`coff`).
        """CREATE TABLE output_chunks (
            payload_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            part INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            coff INTEGER NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE INDEX output_chunks_payload ON output_chunks (payload_id)",
        """CREATE TABLE output_streams (
            payload_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            total INTEGER NOT NULL,
            PRIMARY KEY (payload_id, stream)
        ) WITHOUT ROWID""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
    (
        # Callback deliveries, each as its JSON (`model.Delivery`), deleted with the payload.
        """CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            payload_id TEXT NOT NULL,
            delivery TEXT NOT NULL
        )""",
        "CREATE INDEX deliveries_payload ON deliveries (payload_id)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

#: What a batch runs, row by row (`executemany`: one call per statement and batch, not per
#: row). Each finds its rows through a key or an index, never by a scan: a record costs
#: the same with a million kept (tests/test_sqlite_store.py checks their query plans).
INSERT_PAYLOAD = "INSERT INTO payloads (id, status, record) VALUES (?, ?, ?)"
UPDATE_PAYLOAD = "UPDATE payloads SET status = ?, record = ? WHERE id = ?"
INSERT_CHUNK = (
    "INSERT INTO output_chunks (payload_id, stream, part, offset, coff, data)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_TOTAL = "INSERT INTO output_streams (payload_id, stream, total) VALUES (?, ?, ?)"
PUT_DELIVERY = "INSERT OR REPLACE INTO deliveries (id, payload_id, delivery) VALUES (?, ?, ?)"
DELETE_PAYLOAD = "DELETE FROM payloads WHERE id = ?"
DELETE_DELIVERIES = "DELETE FROM deliveries WHERE payload_id = ?"
DELETE_CHUNKS = "DELETE FROM output_chunks WHERE payload_id = ?"
DELETE_TOTALS = "DELETE FROM output_streams WHERE payload_id = ?"
DELETE_META = "DELETE FROM meta WHERE key = ?"
PUT_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
SELECT_CHUNKS = "SELECT stream, part, offset, coff, data FROM output_chunks WHERE payload_id = ?"
SELECT_TOTALS = "SELECT stream, total FROM output_streams WHERE payload_id = ?"
BY_KEY = (
    UPDATE_PAYLOAD,
    DELETE_PAYLOAD,
    DELETE_DELIVERIES,
    DELETE_CHUNKS,
    DELETE_TOTALS,
    DELETE_META,
    SELECT_CHUNKS,
    SELECT_TOTALS,
)

#: Free pages (4 KiB each) past which deleting records gives space back to the file system.
_VACUUM_PAGES = 256

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True, slots=True)
class SqliteUrl:
    path: str
    #: PRAGMA synchronous. NORMAL in WAL mode: a commit survives the server's crash, and the
    #: last commits may be lost to a power cut or a kernel crash. FULL survives those too.
    synchronous: str = "NORMAL"

    @classmethod
    def parse(cls, url: str) -> SqliteUrl:
        """`sqlite:////abs/path.db` or `sqlite:///relative.db`, optionally `?synchronous=full`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc:
            raise StoreUnavailable(
                f"bad store URL {url!r}: expected sqlite:///relative.db or sqlite:////abs/path.db"
            )
        path = parts.path[1:]  # the third slash ends the (empty) host
        if not path:
            raise StoreUnavailable(f"bad store URL {url!r}: it names no file")
        query = urllib.parse.parse_qs(parts.query)
        unknown = set(query) - {"synchronous"}
        if unknown:
            raise StoreUnavailable(f"bad store URL {url!r}: unknown options {sorted(unknown)}")
        synchronous = query.get("synchronous", ["NORMAL"])[-1].upper()
        if synchronous not in _SYNCHRONOUS:
            raise StoreUnavailable(f"bad store URL {url!r}: synchronous is one of {_SYNCHRONOUS}")
        return cls(path, synchronous)


def connect(url: SqliteUrl) -> sqlite3.Connection:
    """Open the database, set it up and bring its schema up to date.

    Raises `StoreUnavailable` with a one-line reason when the file cannot be used.
    """
    directory = os.path.dirname(os.path.abspath(url.path))
    if not os.path.isdir(directory):
        raise StoreUnavailable(f"{url.path}: directory {directory} does not exist{_slashes(url)}")
    try:
        # Autocommit: transactions are begun and committed explicitly, one per batch.
        conn = sqlite3.connect(url.path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"{url.path}: {exc}") from exc
    try:
        _configure(conn, url)
        _migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        if exc.sqlite_errorname.startswith("SQLITE_BUSY"):
            # The exclusive lock below: the file is another server's while it runs.
            raise StoreUnavailable(
                f"another server is using {os.path.abspath(url.path)}; stop it, or give "
                "this one another file"
            ) from exc
        raise StoreUnavailable(f"{url.path}: {exc}") from exc
    except StoreUnavailable:
        conn.close()
        raise
    return conn


def _slashes(url: SqliteUrl) -> str:
    """A hint for the common slip of three slashes where an absolute path needs four."""
    if os.path.isabs(url.path) or not os.path.isdir(os.path.dirname("/" + url.path)):
        return ""
    return (
        f" (sqlite:///{url.path} is the path {url.path} relative to this directory; "
        f"for /{url.path} write four slashes: sqlite:////{url.path})"
    )


def _configure(conn: sqlite3.Connection, url: SqliteUrl) -> None:
    # Only takes effect on a new, empty file: freed pages can then be given back to the
    # file system with `PRAGMA incremental_vacuum`, so deleting records shrinks the file.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    # Exclusive: a second server on the same file fails to start instead of sharing (and
    # recovering) the first one's payloads. The OS drops the lock when a server dies.
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("PRAGMA busy_timeout = 2000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreUnavailable(f"{url.path}: cannot use write-ahead logging (journal {mode})")
    conn.execute(f"PRAGMA synchronous = {url.synchronous}")
    # After a checkpoint the WAL file is cut back to this size instead of staying at its peak.
    conn.execute("PRAGMA journal_size_limit = 16777216")


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database has schema version {version}, newer than this Pericles knows "
                f"({SCHEMA_VERSION}): upgrade Pericles or use another file"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def vacuum(conn: sqlite3.Connection) -> None:
    """Give freed pages back to the file system once there are enough of them to matter."""
    if conn.execute("PRAGMA freelist_count").fetchone()[0] >= _VACUUM_PAGES:
        # Each step of this pragma frees one page, and execute() steps a statement without
        # result rows once: executescript() runs it to the end (no transaction is open here).
        conn.executescript("PRAGMA incremental_vacuum;")


def delete_output(conn: sqlite3.Connection, payload_ids: Iterable[str]) -> None:
    keys = [(payload_id,) for payload_id in payload_ids]
    conn.executemany(DELETE_CHUNKS, keys)
    conn.executemany(DELETE_TOTALS, keys)
