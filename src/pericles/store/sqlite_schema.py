"""The sqlite store's file: its URL, connection settings, schema, forward migrations and the
statements the store runs.

Everything here runs on the store's one database thread, never on the event loop.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class Many:
    """A statement over any number of rows: `head`, each row's placeholders, `tail`.

    A batch's rows go in as a few statements, not one step each: every step gives the GIL
    up and takes it back, and taking it back from a busy event loop waits for the loop to
    let go of it (up to the interpreter's switch interval, 5 ms): a commit of many small
    steps takes that many waits, and a payload's start waits for its commit.
    """

    head: str
    row: str
    tail: str = ""

    def sql(self, rows: int) -> str:
        return _sql(self, rows)


@functools.cache
def _sql(many: Many, rows: int) -> str:
    return f"{many.head}{', '.join([many.row] * rows)}{many.tail}"


#: Rows per statement: a batch of n rows is cut into sizes from this list (n's binary
#: digits, 64 at most), so few distinct statements are prepared (and cached by sqlite3).
_SIZES = (64, 32, 16, 8, 4, 2, 1)


def run_many(conn: sqlite3.Connection, many: Many, rows: Sequence[Sequence[object]]) -> None:
    done = 0
    for size in _SIZES:
        while len(rows) - done >= size:
            conn.execute(
                many.sql(size), [value for row in rows[done : done + size] for value in row]
            )
            done += size


# What a batch runs. Each finds its rows through a key or an index, never by a scan: a
# record costs the same with a million kept (tests/test_sqlite_store.py checks the plans).
INSERT_PAYLOADS = Many("INSERT INTO payloads (id, status, record) VALUES ", "(?, ?, ?)")
#: Rows (id, status, record). `UPDATE ... FROM` needs SQLite 3.33 (2020); older libraries
#: update one row a step (`UPDATE_PAYLOAD`).
UPDATE_PAYLOADS = Many(
    "UPDATE payloads SET status = v.column2, record = v.column3 FROM (VALUES ",
    "(?, ?, ?)",
    ") AS v WHERE payloads.id = v.column1",
)
UPDATE_PAYLOAD = "UPDATE payloads SET status = ?2, record = ?3 WHERE id = ?1"
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)
INSERT_CHUNKS = Many(
    "INSERT INTO output_chunks (payload_id, stream, part, offset, coff, data) VALUES ",
    "(?, ?, ?, ?, ?, ?)",
)
INSERT_TOTALS = Many("INSERT INTO output_streams (payload_id, stream, total) VALUES ", "(?, ?, ?)")
PUT_DELIVERIES = Many(
    "INSERT OR REPLACE INTO deliveries (id, payload_id, delivery) VALUES ", "(?, ?, ?)"
)
PUT_META = Many("INSERT OR REPLACE INTO meta (key, value) VALUES ", "(?, ?)")
DELETE_PAYLOADS = Many("DELETE FROM payloads WHERE id IN (", "?", ")")
DELETE_DELIVERIES = Many("DELETE FROM deliveries WHERE payload_id IN (", "?", ")")
DELETE_CHUNKS = Many("DELETE FROM output_chunks WHERE payload_id IN (", "?", ")")
DELETE_TOTALS = Many("DELETE FROM output_streams WHERE payload_id IN (", "?", ")")
DELETE_META = Many("DELETE FROM meta WHERE key IN (", "?", ")")
SELECT_CHUNKS = "SELECT stream, part, offset, coff, data FROM output_chunks WHERE payload_id = ?"
SELECT_TOTALS = "SELECT stream, total FROM output_streams WHERE payload_id = ?"
#: The statements that look rows up, as run for two rows (the query plan tests).
BY_KEY = (
    UPDATE_PAYLOADS.sql(2),
    UPDATE_PAYLOAD,
    *(m.sql(2) for m in (DELETE_PAYLOADS, DELETE_DELIVERIES, DELETE_CHUNKS, DELETE_TOTALS)),
    DELETE_META.sql(2),
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
        conn = sqlite3.connect(url.path, isolation_level=None, cached_statements=256)
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
    run_many(conn, DELETE_CHUNKS, keys)
    run_many(conn, DELETE_TOTALS, keys)
