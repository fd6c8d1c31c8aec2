"""`--run-as USER[:GROUP]`: the user and group payloads drop to before exec."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd


class UnknownIdentity(ValueError):
    """The user or group named in --run-as does not exist here."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunAs:
    uid: int
    gid: int
    text: str


def _uid(user: str) -> tuple[int, int]:
    """The uid and primary gid of `user`, a name or a number."""
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        if user.isdigit():  # a uid with no passwd entry is fine; its group is then its number
            return int(user), int(user)
        raise UnknownIdentity(f"no user named {user!r}") from None
    return entry.pw_uid, entry.pw_gid


def _gid(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UnknownIdentity(f"no group named {group!r}") from None


def parse_run_as(text: str) -> RunAs:
    """`USER[:GROUP]`, names or numbers; the group defaults to the user's primary group."""
    user, _, group = text.partition(":")
    if not user:
        raise UnknownIdentity(f"--run-as {text!r}: no user")
    uid, gid = _uid(user)
    if group:
        gid = _gid(group)
    return RunAs(uid, gid, text)


def drop_privileges(run_as: RunAs) -> None:
    """In the forked child: clear supplementary groups, then set the gid, then the uid.

    The order matters: once the uid is no longer 0 the process may not change its groups.
    """
    os.setgroups([])
    os.setgid(run_as.gid)
    os.setuid(run_as.uid)


def is_root() -> bool:
    return os.geteuid() == 0
