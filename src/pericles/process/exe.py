"""Which file a payload's command really runs, and its SHA-256, judged on open files.

A command is found the way exec would find it: a bare name on the payload's PATH, a path with
a slash against the payload's `cwd` (or the server's). Then the file and the cwd are *opened*
(`open_target`), and what is judged is what the kernel says those open files are: their real
paths (`/proc/self/fd/N`) and the digest read from the open executable. At start the runner
opens them again, checks they are still what was judged, and the child `fchdir()`s into the
open directory; when a rule pins a sha256 it execs the open file itself (`/proc/self/fd/N`, or
`fexecve` in the fork path), so nothing swapped after the check can run.

Paths are opened with `openat2(RESOLVE_NO_MAGICLINKS)`: a path through a /proc magic link
(`/proc/<pid>/root`, `cwd`, `exe`, `fd/N`, ...) would reach another process's view of the
file system, or the server's own binary, so it is refused with a clear reason.

Hashing reads the whole file, so digests are cached by the open file's identity
(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): no one can set ctime, and a write, even
one that puts size and mtime back, changes it (fine-grained once it has been read, on kernels
with multigrain timestamps, 6.13 and later).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import hashlib
import os
import stat
from collections import OrderedDict

from pericles.model import Resolved
from pericles.process.spawn import DEFAULT_PATH, SpawnFailed, exec_errno, resolve_executable

_HASH_CHUNK = 1024 * 1024
_CACHE_SIZE = 4096

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (a syscall added in 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class MagicLink(SpawnFailed):
    """A path through a /proc magic link: refused, it could lead anywhere."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP)
        self.reason = (
            f"{path!r} passes through a /proc link (/proc/<pid>/root, cwd, exe, fd): "
            "such paths are refused"
        )


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    """`openat(dir_fd, path, flags)` that refuses to follow /proc magic links."""
    if "\0" in path:
        raise SpawnFailed(errno.EINVAL)
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_NO_MAGICLINKS)
    fd = int(_libc.syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), 24))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ELOOP and _opens_plainly(dir_fd, path):
        raise MagicLink(path)
    raise SpawnFailed(err)


def _opens_plainly(dir_fd: int, path: str) -> bool:
    """Whether `path` opens when magic links may be followed: then one was the trouble."""
    try:
        os.close(os.open(path, os.O_PATH | os.O_CLOEXEC, dir_fd=None if dir_fd < 0 else dir_fd))
    except OSError:
        return False
    return True


def fd_path(fd: int) -> str:
    """The real path of the open file `fd`, as the kernel knows it."""
    return os.readlink(f"/proc/self/fd/{fd}")


@dataclasses.dataclass(slots=True)
class Target:
    """The executable and the cwd of a payload, open; `close()` when done."""

    resolved: Resolved
    exe_fd: int
    cwd_fd: int | None

    def close(self) -> None:
        for fd in (self.exe_fd, self.cwd_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.exe_fd, self.cwd_fd = -1, None


def canonical(path: str, cwd: str | None = None) -> str:
    """`path` made absolute against `cwd` (or the server's), `..` and symlinks resolved."""
    return os.path.realpath(os.path.join(cwd or os.getcwd(), path))


def resolve(cmd: str, search_path: str | None, cwd: str | None = None) -> str:
    """The absolute, symlink-free file `cmd` runs (for rules in the policy file).

    Raises `SpawnFailed` with the errno exec would give (ENOENT, EACCES).
    """
    found = resolve_executable(cmd, search_path or DEFAULT_PATH)
    real = canonical(found, cwd)
    if err := exec_errno(real):
        raise SpawnFailed(err)
    return real


def _open_dir(path: str) -> int:
    fd = _openat2(_AT_FDCWD, path, os.O_PATH | os.O_DIRECTORY)
    real = fd_path(fd)
    if not os.access(real, os.X_OK):
        os.close(fd)
        raise SpawnFailed(errno.EACCES)
    return fd


def _open_exe(path: str, dir_fd: int) -> tuple[int, str, os.stat_result]:
    """The open executable, its real path and its stat (each asked of the kernel once)."""
    try:
        fd = _openat2(dir_fd, path, os.O_RDONLY)
    except SpawnFailed as exc:
        if exc.errno != errno.EACCES:
            raise
        fd = _openat2(dir_fd, path, os.O_PATH)  # execute-only: runnable, not hashable
    try:
        st = os.fstat(fd)
        real = fd_path(fd)
        if stat.S_ISDIR(st.st_mode) or not os.access(real, os.X_OK):
            raise SpawnFailed(errno.EACCES)
    except BaseException:
        os.close(fd)
        raise
    return fd, real, st


def _digest_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DigestCache:
    """SHA-256 of open executables, kept by file identity; least recently used go first."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[int, ...], str] = OrderedDict()

    async def sha256(self, fd: int, st: os.stat_result | None = None) -> str | None:
        """The digest of the open file `fd` (read through it; `st` its `fstat` if known);
        None when it cannot be read."""
        try:
            key = _identity(st or os.fstat(fd))
        except OSError:
            return None
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        try:
            # A large file takes a while to read: off the event loop.
            found = await asyncio.to_thread(_digest_fd, fd)
        except OSError:  # an O_PATH descriptor (execute-only file) cannot be read
            return None
        self._entries[key] = found
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return found


async def open_target(
    cmd: str, search_path: str | None, cwd: str | None, cache: DigestCache
) -> Target:
    """Open the file `cmd` runs and its `cwd`, and say what they are; close it when done.

    Raises `SpawnFailed` like exec would (ENOENT, EACCES), `MagicLink` for /proc links.
    """
    try:
        cwd_fd = _open_dir(cwd) if cwd is not None else None
    except OSError as exc:
        raise SpawnFailed(exc.errno or errno.EIO) from exc
    try:
        found = resolve_executable(cmd, search_path or DEFAULT_PATH)
        exe_fd, exe, st = _open_exe(found, _AT_FDCWD if cwd_fd is None else cwd_fd)
    except BaseException as exc:
        if cwd_fd is not None:
            os.close(cwd_fd)
        if isinstance(exc, OSError) and not isinstance(exc, SpawnFailed):
            raise SpawnFailed(exc.errno or errno.EIO) from exc
        raise
    try:
        real_cwd = fd_path(cwd_fd) if cwd_fd is not None else None
        resolved = Resolved(exe, await cache.sha256(exe_fd, st), real_cwd)
    except BaseException as exc:
        Target(Resolved("", None), exe_fd, cwd_fd).close()
        if isinstance(exc, OSError):
            raise SpawnFailed(exc.errno or errno.EIO) from exc
        raise
    return Target(resolved, exe_fd, cwd_fd)


class HostPaths:
    """Paths as this host resolves them, for the command policy's rules (`policy.Paths`).

    Bare names are looked up on `search_path`: the PATH payloads get (`--payload-path`).
    """

    def __init__(self, search_path: str = DEFAULT_PATH) -> None:
        self.search_path = search_path

    def canonical(self, path: str) -> str:
        return canonical(path)

    def which(self, name: str) -> str:
        """The file the bare `name` is on the search PATH; `LookupError` saying why not."""
        try:
            return resolve(name, self.search_path)
        except SpawnFailed as exc:
            raise LookupError(f"not on {self.search_path}: {exc.reason}") from exc


HOST_PATHS = HostPaths()


async def identify(
    cmd: str, search_path: str | None, cwd: str | None, cache: DigestCache
) -> Resolved:
    """What `cmd` runs in `cwd` (see `open_target`), the files closed again."""
    target = await open_target(cmd, search_path, cwd, cache)
    target.close()
    return target.resolved
