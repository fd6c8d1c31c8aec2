"""Which file a payload's command really runs, and its SHA-256.

A command is resolved the way exec would find it: a bare name on the payload's PATH, a path
with a slash against the payload's `cwd` (or the server's), then `..` and symlinks resolved
with realpath. The runner executes that absolute path, so the file a policy matched and
hashed is the file exec opens by name.

Hashing reads the whole file, so digests are cached by the file's identity
(path, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): the hot path for a small system
binary is one stat. ctime is in the key because no one can set it: a write into the file,
even one that puts size and mtime back as they were, changes it.

The window between hash and exec (TOCTOU): the digest is of the file at that path a moment
before exec opens it by name. Whoever can write that file or swap a directory on its path
can change what runs in between; for system binaries that is root alone, who could change
the server itself. We do not exec through an fd opened once (`/proc/self/fd/N`, the only
way posix_spawn has): the kernel then names the process after the fd number (its `comm`
reads "5"), and a `#!` script's interpreter gets `/proc/self/fd/N` as the script path,
which a close-on-exec fd no longer has. So: allow only files that untrusted users cannot
write, and the window is closed by permissions instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict

from pericles.model import Resolved
from pericles.process.spawn import DEFAULT_PATH, SpawnFailed, exec_errno, resolve_executable

_HASH_CHUNK = 1024 * 1024
_CACHE_SIZE = 4096


def canonical(path: str, cwd: str | None = None) -> str:
    """`path` made absolute against `cwd` (or the server's), `..` and symlinks resolved."""
    return os.path.realpath(os.path.join(cwd or os.getcwd(), path))


def resolve(cmd: str, search_path: str | None, cwd: str | None = None) -> str:
    """The absolute, symlink-free file `cmd` runs.

    Raises `SpawnFailed` with the errno exec would give (ENOENT, EACCES).
    """
    found = resolve_executable(cmd, search_path or DEFAULT_PATH)
    real = canonical(found, cwd)
    if err := exec_errno(real):
        raise SpawnFailed(err)
    return real


def _digest_file(path: str) -> tuple[tuple[int, ...], str] | None:
    """The identity and SHA-256 of the file at `path`, read through one fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        digest = hashlib.sha256()
        while chunk := os.read(fd, _HASH_CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return _identity(st), digest.hexdigest()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DigestCache:
    """SHA-256 of executables, kept by file identity; least recently used entries go first."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[tuple[int, ...], str]] = OrderedDict()

    async def sha256(self, path: str) -> str | None:
        try:
            key = _identity(os.stat(path))
        except OSError:
            return None
        entry = self._entries.get(path)
        if entry is not None and entry[0] == key:
            self._entries.move_to_end(path)
            return entry[1]
        # A large file takes a while to read: off the event loop.
        found = await asyncio.to_thread(_digest_file, path)
        if found is None:
            return None
        self._entries[path] = found
        self._entries.move_to_end(path)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return found[1]


class HostPaths:
    """Paths as this host resolves them, for the command policy's rules (`policy.Paths`)."""

    def canonical(self, path: str) -> str:
        return canonical(path)

    def which(self, name: str) -> str:
        """The file the bare `name` is on the default PATH; `LookupError` saying why not."""
        try:
            return resolve(name, DEFAULT_PATH)
        except SpawnFailed as exc:
            raise LookupError(f"not on {DEFAULT_PATH}: {exc.reason}") from exc


HOST_PATHS = HostPaths()


async def identify(
    cmd: str, search_path: str | None, cwd: str | None, cache: DigestCache
) -> Resolved:
    """Resolve `cmd` (see `resolve`) and hash it; raises `SpawnFailed` like exec would."""
    exe = resolve(cmd, search_path, cwd)
    return Resolved(exe, await cache.sha256(exe), canonical(cwd) if cwd is not None else None)
