"""A session on a daemon, as a client drives it over 9P: the one place its files are spelled.

Every program that runs commands through a daemon does the same few things with a session
directory (SPEC.md §4): read ``clone`` for a new one, write lines to its ``ctl`` (``res``,
``env``, ``exec``, ``kill``, ``close``…), read its ``status`` rows and its ``wait``, find a
sub-session's data endpoint in its ``ctl`` line. ``brasil run`` (client/run.py), PUSH's remote
engine, ``brasil workers`` and a daemon delegating sub-sessions to a neighbour
(tree/delegation.py) all do it through :class:`SessionClient`, so the ctl words and the rows'
layout are written once. The bytes on the wire are what each of them wrote by hand before: a
daemon of an older version understands us.

A session lives while its ``ctl`` is held open by someone or until it is closed; a client that
must release it whatever happens (a run cut short, a node out of fids) :meth:`~SessionClient.hold`s
its ``ctl`` from the start, so that closing needs no new fid.
"""

from __future__ import annotations

import errno
import shlex
import weakref

from ..ninep.client import Client, File
from ..ninep.constants import ORDWR, OREAD, OWRITE
from ..ninep.errors import Eperm, NinepError

LOCAL = "csrv/local"
# The clones (by connection, then path) that are only read, a daemon's from before clone_held
# or a query path's: not asked again.
_read_only_clones: weakref.WeakKeyDictionary[Client, set[str]] = weakref.WeakKeyDictionary()


def one_line(cmd: str) -> str:
    """``cmd`` as one ``exec`` line of a ctl file (a newline there would end the command and
    start another): a multi-line script becomes ``eval`` of its text, the newlines written as
    ``printf %b`` escapes, so /bin/sh runs exactly what was written."""
    if "\n" not in cmd:
        return cmd
    text = cmd.replace("\\", "\\\\").replace("\n", "\\n")
    return f"eval \"$(printf '%b' {shlex.quote(text)})\""


def exec_line(command: str) -> str:
    """The ctl line that runs ``command`` (of any number of lines) on every rank."""
    return f"exec {one_line(command)}"


def lines(*ctl: str) -> str:
    """ctl lines as one write: each ends with a newline, and the daemon runs them in order."""
    return "".join(ln + "\n" for ln in ctl)


def rank_rows(text: str) -> list[list[str]]:
    """The rows of a ``status`` or ``wait`` that are about one rank (sub-session), split into
    words: ``RANK NODE SLOT STATE …`` in a status, ``RANK STATUS [unread]`` or ``RANK lost …``
    in a wait. Other lines (a session's own, a total) are left out."""
    return [w for w in (ln.split() for ln in text.splitlines()) if w and w[0].isdigit()]


def data_address(ctl_line: str) -> str | None:
    """The data endpoint a sub-session's ctl line names (``…; data HOST:PORT``), if any."""
    for part in ctl_line.split(";"):
        words = part.split()
        if len(words) == 2 and words[0] == "data":
            return words[1]
    return None


class SessionClient:
    """A session directory on the daemon at the other end of ``c`` (``csrv/local/ID``, or a
    sub-session's ``csrv/local/ID/J``)."""

    def __init__(self, c: Client, path: str, ctl: File | None = None) -> None:
        self.c = c
        self.path = path
        self.held = ctl  # the ctl file held open, which every ctl line then goes through

    @classmethod
    async def clone(cls, c: Client, root: str = LOCAL) -> SessionClient:
        """A new session: opening ``clone`` makes one, and its one read names it (the walk, the
        open and the read in one round trip; the clunk is not waited for)."""
        f, sid_line = await c.open_read(f"{root}/clone")
        f.forget()
        sid = sid_line.decode().strip()
        return cls(c, f"{root}/{sid}")

    @classmethod
    async def clone_held(cls, c: Client, root: str = LOCAL) -> SessionClient:
        """A new session with its ``ctl`` held (``ORDWR``), in one round trip: ``clone`` opened
        for writing is the new session's ctl, and its first read the state line that names it
        (docs/reference.md, Sessions). A daemon from before that (its clone only read) costs the
        two opens it took then, and is remembered, so it is not asked again."""
        if root not in _read_only_clones.get(c, ()):
            try:
                f, line = await c.open_read(f"{root}/clone", mode=ORDWR)
            except NinepError as e:
                if e.errno != errno.EACCES and Eperm[0] not in e.message:  # (9P2000: no errno)
                    raise
                _read_only_clones.setdefault(c, set()).add(root)
            else:
                words = line.decode().split()
                if len(words) < 2 or words[0] != "session":
                    f.forget()
                    raise NinepError(f"{root}/clone: not a session's state: {line[:80]!r}")
                f.offset = 0  # a ctl's reads are its state, each from 0
                return cls(c, f"{root}/{words[1]}", f)
        there = await cls.clone(c, root)
        await there.hold(ORDWR)
        return there

    @property
    def sid(self) -> str:
        return self.path.rpartition("/")[2]

    def sub(self, j: int) -> SessionClient:
        """Its sub-session ``j`` (a rank), on whichever node holds it."""
        return SessionClient(self.c, f"{self.path}/{j}")

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    # ---- ctl ----

    async def hold(self, mode: int = OWRITE) -> File:
        """Open ``ctl`` and keep it: later lines go through it, and closing needs no new fid."""
        if self.held is None:
            self.held = await self.c.open(self.file("ctl"), mode)
        return self.held

    async def ctl(self, *ctl: str) -> None:
        """ctl lines, in one write (a ctl's offset means nothing: 0 on a held file)."""
        if self.held is not None:
            await self.held.write(lines(*ctl), 0)
        else:
            await self.c.write(self.file("ctl"), lines(*ctl))

    async def exec(self, command: str, *before: str) -> None:
        """``before`` lines (env, mux…) and ``exec command``, in one write."""
        await self.ctl(*before, exec_line(command))

    async def kill(self, sig: int | str = "KILL") -> None:
        await self.ctl(f"kill {sig}")

    async def close(self) -> None:
        """``close``: every rank killed, every slot released; a session gone already, or a
        connection lost (whose daemon closes it), is not an error here."""
        try:
            await self.ctl("close")
        except (NinepError, ConnectionError):
            pass

    def forget(self) -> None:
        """Let go of the held ctl without waiting for the daemon's answer."""
        if self.held is not None:
            self.held.forget()
            self.held = None

    async def state(self) -> str:
        """The ctl file's line: the session's (or sub-session's) state, and its data endpoint;
        read through the held ctl if there is one (held ``ORDWR``, then)."""
        if self.held is not None:
            return (await self.held.read(4096, 0)).decode()
        return (await self.c.read(self.file("ctl"))).decode()

    async def data_address(self) -> str | None:
        """Where a sub-session takes its direct data connections (cut-through, gather)."""
        return data_address(await self.state())

    # ---- its other files ----

    async def read(self, name: str) -> str:
        return (await self.c.read(self.file(name))).decode()

    async def rows(self) -> list[list[str]]:
        """``status``'s rank rows (:func:`rank_rows`)."""
        return rank_rows(await self.read("status"))

    async def nodes(self) -> dict[int, str]:
        """Where each rank runs."""
        return {int(w[0]): w[1] for w in await self.rows() if len(w) >= 2}

    async def wait(self) -> str:
        """``wait``: returns once every rank has ended (or its node is lost), saying how."""
        return await self.read("wait")

    async def open(self, name: str, mode: int = OREAD) -> File:
        """One of its data files (``stdio``, ``stderr``, a rank's ``stdin``…) to stream."""
        return await self.c.open(self.file(name), mode)


__all__ = ["LOCAL", "SessionClient", "data_address", "exec_line", "lines", "one_line",
           "rank_rows"]
