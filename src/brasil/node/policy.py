"""Protective policy: caps per user on what one daemon hands out (issue 21 §2, UEM's policy
modules: "keep rogue threads from allocating obnoxious numbers of resources").

The administrator writes a TOML file (``brasil serve --policy FILE``)::

    [caps."*"]            # everyone not named below
    sessions = 20         # sessions holding a reservation made at this node, at once
    slots = 256           # slots those sessions hold together (here and below this node)
    reservation = 128     # slots one `res` may ask for

    [caps.alice]
    slots = 16

A user's own table replaces the ``"*"`` one key by key; a key left out is unlimited. The caps
are checked where a session is made (its origin), on every ``res``: a sub-session delegated by
a neighbour was checked at its own origin, and the neighbour's daemon is not the user.

Who the user is: the name a client attached with (9P's uname). Every client holds the cluster
secret, which already lets it run anything as the daemon's owner, so a cap protects against a
runaway script or a mistake, not against a holder of the secret who lies about its name.
"""

from __future__ import annotations

import errno
import tomllib
from dataclasses import dataclass, fields, replace

from ..ninep.errors import NinepError

KEYS = ("sessions", "slots", "reservation")


@dataclass(frozen=True)
class Caps:
    sessions: int | None = None
    slots: int | None = None
    reservation: int | None = None


class PolicyError(ValueError):
    """The policy file is wrong: the message says where and how to fix it."""


@dataclass(frozen=True)
class Policy:
    source: str  # where it came from, named in every refusal
    default: Caps
    users: dict[str, Caps]

    def caps(self, user: str) -> Caps:
        mine = self.users.get(user)
        if mine is None:
            return self.default
        return Caps(**{f.name: getattr(mine, f.name) if getattr(mine, f.name) is not None
                       else getattr(self.default, f.name) for f in fields(Caps)})

    def check_res(self, user: str, n: int, sessions: int, held: int) -> None:
        """``n`` more slots for a session of ``user``, who has ``sessions`` other sessions
        holding ``held`` slots made here: nothing, or the refusal naming the cap."""
        caps, who = self.caps(user), self._who(user)
        if caps.reservation is not None and n > caps.reservation:
            self._refuse(f"{who} may ask for at most {caps.reservation} slots in one res "
                         f"(asked {n})", user, "reservation")
        if caps.sessions is not None and sessions + 1 > caps.sessions:
            self._refuse(f"{who} may hold at most {caps.sessions} sessions with slots at once "
                         f"({sessions} now); close one first", user, "sessions")
        if caps.slots is not None and held + n > caps.slots:
            self._refuse(f"{who} may hold at most {caps.slots} slots at once ({held} held, "
                         f"{n} asked)", user, "slots")

    def _who(self, user: str) -> str:
        return f"user {user}" if user in self.users else f"user {user} (caps \"*\")"

    def _refuse(self, why: str, user: str, key: str) -> None:
        table = user if user in self.users else "*"
        raise NinepError(f"res: refused by policy {self.source}: {why}; to change it, the "
                         f'administrator edits caps."{table}".{key} there', errno.EDQUOT)


# What a session may narrow for itself (``cap KEY N`` on its ctl): the user or the application
# knows its own bounds ("this job never needs more than 64 slots"), the administrator's caps
# stay as they are above it. ``sessions`` is a count of a user's sessions: not a session's own.
SESSION_KEYS = ("slots", "reservation")


def narrow(caps: Caps, key: str, n: int, path: str) -> Caps:
    """``caps`` with ``key`` lowered to ``n``: a cap only narrows, so raising one is refused."""
    if key not in SESSION_KEYS:
        raise NinepError(f"cap: unknown cap {key[:40]!r}; a session narrows "
                         f"{' or '.join(SESSION_KEYS)} (cap slots N, cap reservation N)",
                         errno.EINVAL)
    now = getattr(caps, key)
    if now is not None and n > now:
        raise NinepError(f"cap: session {path} has {key} capped at {now}; a cap only narrows "
                         f"(ask for {now} or less, or use another session)", errno.EPERM)
    return replace(caps, **{key: n})


def check_session(caps: Caps, n: int, held: int, path: str) -> None:
    """``n`` more slots for a session holding ``held``, under its own caps."""
    if caps.reservation is not None and n > caps.reservation:
        raise NinepError(f"res: refused by session {path}'s own cap: at most "
                         f"{caps.reservation} slots in one res (asked {n}; set by `cap "
                         "reservation` on its ctl, which only narrows)", errno.EDQUOT)
    if caps.slots is not None and held + n > caps.slots:
        raise NinepError(f"res: refused by session {path}'s own cap: at most {caps.slots} slots "
                         f"at once ({held} held, {n} asked; set by `cap slots` on its ctl, which "
                         "only narrows)", errno.EDQUOT)


def describe(caps: Caps) -> str:
    return " ".join(f"{k}={getattr(caps, k)}" for k in KEYS if getattr(caps, k) is not None)


def load(path: str) -> Policy:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise PolicyError(f"policy {path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"policy {path}: not TOML: {e}") from None
    return parse(data, path)


def parse(data: dict[str, object], source: str) -> Policy:
    unknown = set(data) - {"caps"}
    if unknown:
        raise PolicyError(f"policy {source}: unknown table(s) {', '.join(sorted(unknown))}; "
                          "only [caps.USER] and [caps.\"*\"] are known")
    caps = data.get("caps", {})
    if not isinstance(caps, dict):
        raise PolicyError(f"policy {source}: caps must be tables ([caps.USER])")
    tables = {user: _caps(source, user, table) for user, table in caps.items()}
    return Policy(source, tables.pop("*", Caps()), tables)


def _caps(source: str, user: str, table: object) -> Caps:
    if not isinstance(table, dict):
        raise PolicyError(f"policy {source}: caps.{user} must be a table of {', '.join(KEYS)}")
    unknown = set(table) - set(KEYS)
    if unknown:
        raise PolicyError(f"policy {source}: caps.{user}: unknown key(s) "
                          f"{', '.join(sorted(unknown))}; the keys are {', '.join(KEYS)}")
    for key, value in table.items():
        if type(value) is not int or value < 0:
            raise PolicyError(f"policy {source}: caps.{user}.{key} = {value!r}: give a whole "
                              "number ≥ 0")
    return Caps(**table)
