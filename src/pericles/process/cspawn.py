"""glibc's `posix_spawn` called through ctypes, so that the GIL is released while it runs.

CPython's `os.posix_spawn` keeps the GIL for the whole call, and the call lasts until the
child has exec'd (vfork semantics: 0.3 ms or more each). On a spawner thread that stalls the
event loop just as much as spawning on the loop would, and two spawner threads take turns
instead of using both cores. A ctypes call (`CDLL`, not `PyDLL`) drops the GIL around the
foreign call: the loop serves requests and reaps while the child execs. Only `posix_spawn`
is called so; the calls that fill in its arguments keep the GIL (`PyDLL`): on a spawner
thread, each release is one more wait to get the GIL back from a busy loop (a forced switch
of threads, two context switches, futex calls) for work that takes nanoseconds.

`spawn` takes what `os.posix_spawn` took in `spawn._posix_spawn`: file actions (dup2, open),
`setsid`, signals reset to their default, an empty signal mask. Where the C library cannot be
used this way (not glibc, a symbol missing), `AVAILABLE` is False and callers keep
`os.posix_spawn`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

# glibc's flag values (spawn.h); POSIX_SPAWN_SETSID since glibc 2.26.
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80

#: Bytes for the opaque C structures: larger than glibc's (80 and 336 on x86_64, 128 for
#: a sigset_t), so a different layout never writes past the buffer.
_OPAQUE = 1024

#: An action: ("dup2", fd, newfd) or ("open", fd, path, flags, mode).
Action = tuple[object, ...]

_pid_t = ctypes.c_int


def _load() -> tuple[ctypes.CDLL, ctypes.PyDLL] | None:
    """glibc twice: for `posix_spawn`, called with the GIL released, and for the calls
    that fill in its arguments, called with the GIL kept (see the module's docstring)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        quick = ctypes.PyDLL("libc.so.6", use_errno=True)
        libc.posix_spawn  # noqa: B018 - looked up now: missing, the module is not AVAILABLE
        for name in (
            "posix_spawn_file_actions_init",
            "posix_spawn_file_actions_adddup2",
            "posix_spawn_file_actions_addopen",
            "posix_spawn_file_actions_destroy",
            "posix_spawnattr_init",
            "posix_spawnattr_setflags",
            "posix_spawnattr_setsigdefault",
            "posix_spawnattr_setsigmask",
            "sigemptyset",
            "sigaddset",
        ):
            getattr(quick, name)
    except (OSError, AttributeError):
        return None
    libc.posix_spawn.argtypes = [
        ctypes.POINTER(_pid_t),
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    libc.posix_spawn.restype = ctypes.c_int
    quick.posix_spawn_file_actions_adddup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    quick.posix_spawn_file_actions_addopen.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    for name in ("posix_spawn_file_actions_init", "posix_spawn_file_actions_destroy"):
        getattr(quick, name).argtypes = [ctypes.c_void_p]
    return libc, quick


_loaded = _load()
AVAILABLE = _loaded is not None
_libc, _quick = _loaded if _loaded is not None else (None, None)

_attrs: dict[tuple[int, ...], ctypes.Array[ctypes.c_char]] = {}
_attrs_lock = threading.Lock()


def _check(result: int) -> None:
    if result != 0:
        raise OSError(result, os.strerror(result))


def _attr(reset: Iterable[int]) -> ctypes.Array[ctypes.c_char]:
    """The spawn attributes for `reset` signals, made once: posix_spawn only reads them,
    so one object serves every thread."""
    key = tuple(sorted(reset))
    attr = _attrs.get(key)
    if attr is not None:
        return attr
    assert _quick is not None
    with _attrs_lock:
        attr = ctypes.create_string_buffer(_OPAQUE)
        default = ctypes.create_string_buffer(_OPAQUE)
        empty = ctypes.create_string_buffer(_OPAQUE)
        _check(_quick.posix_spawnattr_init(attr))
        _check(_quick.sigemptyset(default))
        _check(_quick.sigemptyset(empty))
        for signum in key:
            if _quick.sigaddset(default, signum) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        _check(_quick.posix_spawnattr_setsigdefault(attr, default))
        _check(_quick.posix_spawnattr_setsigmask(attr, empty))
        _check(
            _quick.posix_spawnattr_setflags(
                attr, ctypes.c_short(_SETSID | _SETSIGDEF | _SETSIGMASK)
            )
        )
        _attrs[key] = attr
        return attr


def _c(text: str | bytes, what: str) -> bytes:
    data = os.fsencode(text)
    if b"\0" in data:
        raise ValueError(f"embedded null byte in {what}")
    return data


def _strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    actions: Sequence[Action],
    reset: Iterable[int],
) -> int:
    """`os.posix_spawn(path, argv, env, file_actions=..., setsid=True, setsigdef=reset,
    setsigmask=())` with the GIL released during the call; the pid, or `OSError`."""
    assert _libc is not None
    assert _quick is not None
    if not argv:
        raise ValueError("argv must not be empty")
    c_path = _c(path, "path")
    c_argv = _strings([_c(arg, "argv") for arg in argv])
    entries = []
    for key, value in env.items():
        name = _c(key, "environment")
        if not name or b"=" in name:
            raise ValueError("illegal environment variable name")
        entries.append(name + b"=" + _c(value, "environment"))
    c_env = _strings(entries)
    fa = ctypes.create_string_buffer(_OPAQUE)
    kept: list[bytes] = []  # alive until the call, whatever the C library copies
    _check(_quick.posix_spawn_file_actions_init(fa))
    try:
        for action in actions:
            kind = action[0]
            if kind == "dup2":
                _, fd, newfd = cast(tuple[str, int, int], action)
                _check(_quick.posix_spawn_file_actions_adddup2(fa, fd, newfd))
            else:
                _, fd, where, flags, mode = cast(tuple[str, int, str, int, int], action)
                opened = _c(where, "path")
                kept.append(opened)
                _check(_quick.posix_spawn_file_actions_addopen(fa, fd, opened, flags, mode))
        pid = _pid_t(0)
        _check(_libc.posix_spawn(ctypes.byref(pid), c_path, fa, _attr(reset), c_argv, c_env))
    finally:
        _quick.posix_spawn_file_actions_destroy(fa)
    return pid.value
