"""A session's directory as files (SPEC.md §3): one table, one ctl command table.

Every handle opened on a session's files counts toward the session's open files, which is one of
the things that keep it from being reaped as idle.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from ..exec.procgroup import parse_signal
from ..exec.records import NEWLINE, Key, parse_rs, quote
from ..ninep.constants import OTRUNC
from ..ninep.ctl import CommandTable, CtlFile, CtlHandle, excerpt
from ..ninep.errors import Enotfound, NinepError
from ..ninep.maybe import Maybe, is_awaitable
from ..ninep.synthetic import BytesHandle, Dir, DynamicDir, Entry, GeneratedFile, Handle, Inode
from .attrs import check_label, parse_selection
from .io import READ, Output
from .proc_files import GROUP_FILES, group_ctl
from .ranks import parse as parse_ranks
from .scope import Scope, parse_env
from .stage import check_hash, check_name


def _count_open(session: Scope) -> None:
    session.top.open_handles += 1
    session.touch()


def _count_close(session: Scope) -> None:
    top = session.top
    top.open_handles -= 1
    session.touch()
    if top.came_from is not None and top.open_handles == 0 and top.session_state != "closed":
        # A neighbour's session lives while the neighbour holds it open; let go (or dead), it
        # ends, and what it ran for the neighbour with it.
        top.node.close_session(top)


class SessionHandle(Handle):
    """Counts itself among the session's open files while it lives."""

    def __init__(self, node: Inode, session: Scope) -> None:
        super().__init__(node)
        self.session = session
        _count_open(session)
        self._open = True

    def clunk(self) -> Maybe[None]:
        if self._open:
            self._open = False
            _count_close(self.session)
        return None


class SessionFile(Inode):
    def __init__(self, session: Scope) -> None:
        super().__init__()
        self.session = session


# ---- ctl ----

def _signal(text: str) -> int:
    try:
        return parse_signal(text)
    except ValueError as e:
        raise NinepError(f"kill: {e}", errno.EINVAL) from None


def _rs(args: list[str], what: str) -> Any:
    if not args:
        return NEWLINE
    try:
        return parse_rs(args[0].split(None, 1))
    except ValueError as e:
        raise NinepError(f"{what}: {e}", errno.EINVAL) from None


def _int(text: str, what: str, usage: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise NinepError(f'{what}: "{excerpt(text)}" is not a number; usage: {usage}',
                         errno.EINVAL) from None
    return v


class SessionCtl(CtlFile):
    commands = CommandTable()

    def __init__(self, session: Scope) -> None:
        super().__init__()
        self.session = session

    def state(self) -> str:
        return self.session.state_line()

    def open(self, mode: int) -> Handle:
        return SessionCtlHandle(self)

    @commands.command("res N [where FILTER] [pernode P] | res N [os [arch]] | res +N …",
                      args=(1, 5))
    def res(self, args: list[str]) -> Any:
        usage = "res N [where FILTER] [pernode P]"
        grow = args[0].startswith("+")
        n = _int(args[0][1:] if grow else args[0], "res", usage)
        if n <= 0:
            raise NinepError(f'res: asked for {n} slots; usage: {usage} with N ≥ 1 (or res +N '
                             "to grow a session)", errno.EINVAL)
        # Every attribute of the subtree is gathered only for a selection that may name one:
        # a plain `res N` is the hot path, and that set is one parse per node of the subtree.
        sel = parse_selection(args[1:], self.session.node.known_attrs() if args[1:] else None)
        if grow:  # `res +N` alone repeats the first res's placement
            return self.session.grow(n, sel if args[1:] else None)
        return self.session.reserve(n, sel)

    @commands.command("release RANKS", args=(1, 1))
    def release(self, args: list[str]) -> Any:
        """Elastic sessions: those ranks killed, their slots freed, the rest untouched."""
        return self.session.release_ranks(parse_ranks(args[0], "release"))

    @commands.command("cap slots|reservation N", args=(2, 2))
    def cap(self, args: list[str]) -> None:
        """The session narrows its own caps (node/policy.py): checked at every later res."""
        n = _int(args[1], "cap", "cap slots|reservation N")
        if n < 0:
            raise NinepError(f"cap: {n}: give a whole number ≥ 0", errno.EINVAL)
        self.session.set_cap(args[0], n)

    @commands.command("resupto N [where FILTER] [pernode P]", args=(1, 5))
    def resupto(self, args: list[str]) -> Any:
        """How neighbours are asked: as many slots as there are, up to N (at least one)."""
        n = _int(args[0], "resupto", "resupto N [where FILTER] [pernode P]")
        if n <= 0:
            raise NinepError(f'resupto: asked for {n} slots; N must be ≥ 1', errno.EINVAL)
        return self.session.reserve(n, parse_selection(args[1:]), upto=True)

    @commands.command("from NEIGHBOR")
    def from_(self, args: list[str]) -> None:
        """Set by a node that asks a neighbour for slots: never ask that neighbour back."""
        self.session.came_from = args[0]

    @commands.command("rank BASE SIZE ORIGIN [USER [ROUTE]]", args=(3, 5))
    def rank(self, args: list[str]) -> None:
        """Used by the node that made this session for some of its sub-sessions: where ours
        stand in the whole session (BRASIL_RANK, BRASIL_SIZE, BRASIL_SESSION), whose, and the
        path under that node's /csrv of the session's directory (BRASIL_SESSION_DIR)."""
        usage = "rank BASE SIZE ORIGIN [USER [ROUTE]]"
        base, size = _int(args[0], "rank", usage), _int(args[1], "rank", usage)
        if base < 0 or size < 0:  # (0: every rank released, the session grows again later)
            raise NinepError(f"rank: bad numbers in {quote(' '.join(args))}; usage: {usage}")
        route = args[4] if len(args) > 4 else ""
        if route and (".." in route.split("/") or len(route) > 4096):
            raise NinepError(f"rank: bad route {quote(route)}; usage: {usage}", errno.EINVAL)
        self.session.set_rank(base, size, args[2], args[3] if len(args) > 3 else "", route)

    @commands.command("exec [@RANKS | +] CMD…", raw=True, args=(1, 1))
    def exec(self, args: list[str]) -> Any:
        """``exec CMD`` on every rank; ``exec @4-7 CMD`` on those ranks, ``exec + CMD`` on the
        ranks the last ``res +N`` added (elastic sessions), the others left as they are."""
        head, _, rest = args[0].strip().partition(" ")
        if head == "+" or head.startswith("@"):
            return self.session.exec_ranks(head, rest)
        return self.session.exec(args[0])

    @commands.command("stage HASH NAME", args=(2, 2))
    def stage(self, args: list[str]) -> Any:
        """The file /csrv/local/stage/HASH given to every node holding our ranks, as
        $BRASIL_STAGE/NAME there (node/stage.py)."""
        check_hash(args[0])
        check_name(args[1])
        return self.session.stage(args[0], args[1])

    @commands.command("kill [SIG]")
    def kill(self, args: list[str]) -> Any:
        return self.session.kill(_signal(args[0]) if args else signal.SIGTERM)

    @commands.command("stop", args=(0, 0))
    def stop(self, args: list[str]) -> Any:
        return group_ctl(self.session, "stop", "")

    @commands.command("cont", args=(0, 0))
    def cont(self, args: list[str]) -> Any:
        return group_ctl(self.session, "cont", "")

    @commands.command("detach", args=(0, 0))
    def detach(self, args: list[str]) -> Any:
        return group_ctl(self.session, "detach", "")

    @commands.command("break FUNCTION|FILE:LINE", args=(1, 1))
    def break_(self, args: list[str]) -> Any:
        return group_ctl(self.session, "break", args[0])

    @commands.command("xsplice A B")
    def xsplice(self, args: list[str]) -> Any:
        r = self.session.xsplice(args[0], args[1])
        return r if is_awaitable(r) else None

    @commands.command("splice PATH SRCFD LOCALFD")
    def splice(self, args: list[str]) -> Any:
        usage = "splice PATH SRCFD LOCALFD"
        r = self.session.splice(args[0], _int(args[1], "splice", usage), _int(args[2], "splice", usage))
        return r if is_awaitable(r) else None

    @commands.command("splicein TOKEN")
    def splicein(self, args: list[str]) -> None:
        """Used by the node arranging a splice: expect a direct data connection with TOKEN."""
        self.session.splice_in(args[0], f"in {args[0][:8]}")

    @commands.command("spliceout TOKEN ADDR")
    def spliceout(self, args: list[str]) -> Any:
        """Used by the node arranging a splice: send our stdout straight to ADDR."""
        return self.session.splice_out(args[0], args[1], f"out to {args[1]}")

    @commands.command("lazy on|off")
    def lazy(self, args: list[str]) -> None:
        """PUSH: sub-sessions start when the first bytes of their input arrive (never, if it
        ends empty), so a copy a fan-out dealt nothing does not run."""
        if args[0] not in ("on", "off"):
            raise NinepError(f"lazy: {quote(args[0])}? usage: lazy on|off", errno.EINVAL)
        self.session.top.lazy = args[0] == "on"

    @commands.command("label on|off")
    def label(self, args: list[str]) -> None:
        """`brasil run`: each record of the merged output starts with ``NODE/RANK: ``."""
        if args[0] not in ("on", "off"):
            raise NinepError(f"label: {quote(args[0])}? usage: label on|off", errno.EINVAL)
        self.session.top.label = args[0] == "on"

    @commands.command("gather K TOKEN [RS]")
    def gather(self, args: list[str]) -> None:
        """PUSH: expect K direct data connections presenting TOKEN, merged into this
        sub-session's stdin on record boundaries (RS, default newline)."""
        k = _int(args[0], "gather", "gather K TOKEN [RS]")
        if not 1 <= k <= 4096:
            raise NinepError(f"gather: K must be 1…4096, got {k}", errno.EINVAL)
        self.session.gather(k, args[1], _rs(args[2:], "gather"))

    @commands.command("scatter one|balance|hash [KEY] RS TOKEN@ADDR…")
    def scatter(self, args: list[str]) -> Any:
        """PUSH: send this sub-session's stdout straight to other nodes' data endpoints, cut
        into records: all to one consumer, each block to whichever has room, or by key."""
        usage = "scatter one|balance|hash [KEY] RS TOKEN@ADDR…"
        mode, rest = args[0], args[1:]
        key = None
        if mode == "hash":
            if not rest:
                raise NinepError(f"scatter: hash needs a KEY; usage: {usage}", errno.EINVAL)
            try:
                key = Key(rest[0])
            except ValueError as e:
                raise NinepError(f"scatter: {e}", errno.EINVAL) from None
            rest = rest[1:]
        elif mode not in ("one", "balance"):
            raise NinepError(f"scatter: unknown mode {quote(mode)}; usage: {usage}", errno.EINVAL)
        if len(rest) < 2 or (mode == "one" and len(rest) != 2):
            raise NinepError(f"scatter: bad # of destinations; usage: {usage}", errno.EINVAL)
        rs = _rs(rest[:1], "scatter")
        dests = []
        for d in rest[1:]:
            token, at, addr = d.partition("@")
            if not at or not token or not addr:
                raise NinepError(f"scatter: {quote(d)} is not TOKEN@ADDR", errno.EINVAL)
            dests.append((token, addr))
        return self.session.scatter(mode, key, rs, dests)

    @commands.command("mux broadcast|rr|balance|hash [KEY]", args=(1, 2))
    def mux(self, args: list[str]) -> None:
        self.session.set_mux(args)

    @commands.command("rs newline|nul|blank|fixed N|regex RE", args=(1, 2))
    def rs(self, args: list[str]) -> None:
        try:
            self.session.rs = parse_rs(args)
        except ValueError as e:
            raise NinepError(f"rs: {e}", errno.EINVAL) from None

    @commands.command("env KEY=VALUE", raw=True, args=(1, 1))
    def env(self, args: list[str]) -> None:
        self.session.set_env(args[0])

    @commands.command("dir /PATH", raw=True, args=(1, 1))
    def dir(self, args: list[str]) -> None:
        """Where this session's commands run, on every node (the client's own directory, as
        srun does); a node without it fails the exec, naming itself and the directory."""
        self.session.set_dir(args[0].strip())

    @commands.command("close")
    def close(self, args: list[str]) -> None:
        s = self.session
        if s.parent is not None:
            raise NinepError(f"close: {s.path} is a sub-session; close the session itself "
                             f"(/csrv/local/{s.top.path}/ctl)")
        s.node.close_session(s.top)


class SessionCtlHandle(CtlHandle):
    node: SessionCtl

    def __init__(self, node: SessionCtl) -> None:
        super().__init__(node)
        _count_open(node.session)
        self._open = True

    def clunk(self) -> None:
        if self._open:
            self._open = False
            _count_close(self.node.session)


# ---- data ----

class DataFile(SessionFile):
    """stdio/stdin/stdout/stderr: which output it reads (fd) and whether it writes the input."""

    def __init__(self, session: Scope, fd: int | None, writes: bool) -> None:
        super().__init__(session)
        self.fd = fd
        self.writes = writes

    def open(self, mode: int) -> Handle:
        return DataHandle(self, self.session, (mode & 3) in (1, 2))


class DataHandle(SessionHandle):
    node: DataFile

    def __init__(self, node: DataFile, session: Scope, writing: bool) -> None:
        super().__init__(node, session)
        self.out: Output | None = None
        self.writing = writing and node.writes
        if self.writing:
            session.writers += 1

    def read(self, offset: int, count: int) -> Maybe[bytes]:
        if self.node.fd is None:
            raise NinepError("permission denied: this file is write-only")
        if self.out is None:
            self.out = self.session.output(self.node.fd, READ)
        return self.out.stream.read(count)

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        if not self.node.writes:
            raise NinepError("permission denied: this file is read-only")
        self.session.touch()
        return self.session.input().write(data)

    def clunk(self) -> Maybe[None]:
        if self.writing:
            self.writing = False
            self.session.writers -= 1
            if self.session.writers == 0:
                try:
                    self.session.input().close()  # the last writer gone: end of file
                except NinepError:
                    pass  # nothing reserved yet: nobody to tell
        return super().clunk()


# ---- env and ns ----

class LinesFile(Inode):
    """A file of lines edited by writes: O_TRUNC clears, each write's lines are applied."""

    def __init__(self, render: Callable[[], str], apply: Callable[[str], None],
                 clear: Callable[[], None], check: Callable[[str], Any] = lambda line: None
                 ) -> None:
        super().__init__()
        self.render, self.apply, self.clear, self.check = render, apply, clear, check

    def length(self) -> int:
        return len(self.render().encode())

    def open(self, mode: int) -> Handle:
        if mode & OTRUNC:
            self.clear()
        return LinesHandle(self)


class LinesHandle(BytesHandle):
    node: LinesFile

    def __init__(self, node: LinesFile) -> None:
        super().__init__(node, node.render().encode())

    def read(self, offset: int, count: int) -> bytes:
        if offset == 0:
            self.data = self.node.render().encode()
        return super().read(offset, count)

    def write(self, offset: int, data: bytes) -> int:
        """Every line is checked before any is applied: a bad line fails the write, whole."""
        lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        for line in lines:
            self.node.check(line)
        for line in lines:
            self.node.apply(line)
        return len(data)


def env_lines(env: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in env.items())


def set_env_line(env: dict[str, str], line: str) -> None:
    key, value = parse_env(line)
    env[key] = value


def env_file(env: dict[str, str],
             render: Callable[[], dict[str, str]] | None = None) -> LinesFile:
    return LinesFile(lambda: env_lines(render() if render else env),
                     lambda line: set_env_line(env, line), env.clear, parse_env)


def ns_file(lines: list[str], check: Callable[[str], None],
            render: Callable[[], list[str]] | None = None) -> LinesFile:
    return LinesFile(lambda: "".join(ln + "\n" for ln in (render() if render else lines)),
                     lines.append, lines.clear, check)


# ---- wait ----

class SessionWaitFile(SessionFile):
    """``wait``: blocks until every process of the session (or sub-session) has ended, then
    reads one line per sub-session (batch/files.py's WaitFile waits for a batch job)."""

    def open(self, mode: int) -> Handle:
        return SessionWaitHandle(self, self.session)


class SessionWaitHandle(SessionHandle):
    def __init__(self, node: Inode, session: Scope) -> None:
        super().__init__(node, session)
        self.data: bytes | None = None

    def read(self, offset: int, count: int) -> Maybe[bytes]:
        if self.data is None and not self.session.all_done():
            return self._wait(offset, count)
        return self._answer(offset, count)

    def _answer(self, offset: int, count: int) -> bytes:
        if self.data is None:  # the lines as they were when everything had ended: rereads agree
            self.data = "".join(ln + "\n" for ln in self.session.wait_lines()).encode()
        return self.data[offset:offset + count]

    async def _wait(self, offset: int, count: int) -> bytes:
        await self.session.wait()
        return self._answer(offset, count)


SESSION_TABLE = (
    Entry("ctl", 0o600, SessionCtl),
    Entry("stdio", 0o600, lambda s: DataFile(s, 1, True)),
    Entry("stdin", 0o200, lambda s: DataFile(s, None, True)),
    Entry("stdout", 0o400, lambda s: DataFile(s, 1, False)),
    Entry("stderr", 0o400, lambda s: DataFile(s, 2, False)),
    Entry("env", 0o600, lambda s: env_file(s.env, s.effective_env)),
    Entry("ns", 0o600, lambda s: ns_file(s.ns, s.node.check_ns_line)),
    Entry("args", 0o444, lambda s: GeneratedFile(lambda: s.args + "\n" if s.args else "")),
    Entry("wait", 0o444, SessionWaitFile),
    Entry("status", 0o444, lambda s: GeneratedFile(s.status_text)),
    *GROUP_FILES,
)


class SessionDir(DynamicDir):
    """A session's directory. Sub-session directories are made when first walked to (a
    sub-session's ten files here, or a proxy of one on another node), so ``res 2048`` costs
    nothing per slot here; a listing shows them all."""

    def __init__(self, session: Scope) -> None:
        super().__init__(SESSION_TABLE, session, mode=0o555)
        self.session = session
        self._subdirs: dict[str, Inode] = {}

    def children(self) -> list[Inode]:
        out = list(super().children())
        for i in self.session.indexes():
            name = str(i)
            node = self._subdirs.get(name)
            if node is None:
                node = Dir(name, 0o555)
                node.parent = self
            out.append(node)
        return out

    def walk(self, name: str) -> Any:
        if not name.isdigit():
            return super().walk(name)
        node = self._subdirs.get(name)
        if node is not None:
            if self.session.has_index(int(name)):
                return node
            del self._subdirs[name]  # released (`release RANKS`): gone for good
            raise NinepError(*Enotfound)
        try:
            sub = self.session.sub(name)
        except NinepError:
            raise NinepError(*Enotfound) from None
        if isinstance(sub, Scope):
            return self._install(name, SessionDir(sub))
        return self._settle(name, sub.mount())

    async def _settle(self, name: str, pending: Awaitable[Inode]) -> Inode:
        return self._install(name, await pending)

    def _install(self, name: str, node: Inode) -> Inode:
        if name not in self._subdirs:  # else a concurrent walk got there first
            node.name = name
            self._subdirs[name] = self.adopt(node)
        return self._subdirs[name]



def attrs_file(node: Any) -> LinesFile:
    """``/csrv/local/attrs``: the node's attributes (system ones first); writing ``k=v`` lines
    sets labels, which predicates can then select by."""
    def apply(line: str) -> None:
        k, _, v = line.partition("=")
        node.labels[k.strip()] = v.strip()

    def check(line: str) -> None:
        k, eq, v = line.partition("=")
        if not eq:
            raise NinepError(f'attrs: bad line "{excerpt(line)}"; each is KEY=VALUE', errno.EINVAL)
        check_label(k.strip(), v.strip())
    return LinesFile(lambda: "".join(f"{k}={v}\n" for k, v in node.attrs().items()),
                     apply, node.labels.clear, check)
