"""Fixture trees and a server runner shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

from brasil.ninep.ctl import CommandTable, CtlFile
from brasil.ninep.errors import Eexist, NinepError
from brasil.ninep.server import Server
from brasil.ninep.stream import Stream
from brasil.ninep.synthetic import (
    DynamicDir,
    Entry,
    GeneratedFile,
    Handle,
    Inode,
    StaticFile,
    StreamFile,
    TableDir,
)
from brasil.ninep.transport import Address, bound_addresses


class Scratch(DynamicDir):
    """A directory that lets clients create and remove plain in-memory files."""

    def create(self, name: str, perm: int, mode: int) -> Inode:
        if perm & 0x80000000:
            return self.add(name, Scratch(mode=perm & 0o777))
        return self.add(name, MemFile(mode=perm & 0o777))

    def unlink(self, child: Inode) -> None:
        self.discard(child.name)

    def rename(self, child: Inode, new_name: str) -> None:
        if new_name in self._children:
            raise NinepError(*Eexist)
        node = self.discard(child.name)
        assert node is not None
        self.add(new_name, node)


class MemFile(StaticFile):
    """A writable in-memory file (for create/write/read round trips)."""

    def open(self, mode: int):  # type: ignore[no-untyped-def]
        if mode & 0x10:
            self.content = b""
        return MemHandle(self)

    def wstat(self, st):  # type: ignore[no-untyped-def]
        r = super().wstat(st)
        if st.length == 0:  # a real truncation, unlike a synthetic file's no-op
            self.content = b""
        return r


class MemHandle(Handle):
    def __init__(self, node: MemFile) -> None:
        self.node = node

    def read(self, offset: int, count: int) -> bytes:
        return self.node.content[offset:offset + count]

    def write(self, offset: int, data: bytes) -> int:
        c = self.node.content
        if offset > len(c):
            c += b"\0" * (offset - len(c))
        self.node.content = c[:offset] + data + c[offset + len(data):]
        return len(data)

    def clunk(self) -> None:
        return None


class Counter(CtlFile):
    """A ctl file: `add N`, `reset`; reads give `count N`."""

    commands = CommandTable()

    def __init__(self, owner: object = None) -> None:
        super().__init__()
        self.value = 0

    def state(self) -> str:
        return f"count {self.value}"

    @commands.command("add N")
    def add(self, args: list[str]) -> None:
        try:
            self.value += int(args[0])
        except ValueError:
            raise NinepError(f'add: {args[0]!r} is not a number; usage: add N') from None

    @commands.command("reset")
    def reset(self, args: list[str]) -> None:
        self.value = 0


class FixtureTree:
    """/hello (static), /gen (generated), /ctl, /pipe (stream: write then read), /dir/a..z,
    /tmp (create/remove allowed), /ro (read-only dir), /wo (write-only file)."""

    def __init__(self) -> None:
        self.pipe = Stream(limit=64 * 1024)
        self.generated = 0
        letters = [Entry(chr(c) * 3, 0o444, lambda o, c=c: StaticFile(chr(c) * 10))
                   for c in range(ord("a"), ord("z") + 1)]
        self.root = TableDir([
            Entry("hello", 0o444, lambda o: StaticFile("hello, world\n")),
            Entry("gen", 0o444, lambda o: GeneratedFile(self._gen)),
            Entry("ctl", 0o600, Counter),
            Entry("pipe", 0o600, lambda o: StreamFile(self.pipe, self.pipe)),
            Entry("wo", 0o200, lambda o: StreamFile(None, Stream())),
            Entry("dir", 0o555, lambda o: TableDir(letters)),
            Entry("tmp", 0o777, lambda o: Scratch()),
            Entry("ro", 0o555, lambda o: Scratch()),
        ], mode=0o555)

    def _gen(self) -> str:
        self.generated += 1
        return f"generation {self.generated}\n"


@contextlib.asynccontextmanager
async def serving(root: TableDir, address: Address | None = None, **kw: object
                  ) -> AsyncIterator[tuple[Server, Address]]:
    """Serve ``root`` on an ephemeral loopback port (or ``address``); always stops it."""
    server = Server(root, **kw)  # type: ignore[arg-type]
    listener = await server.listen(address or Address("tcp", "127.0.0.1", 0))
    try:
        yield server, bound_addresses(listener)[0]
    finally:
        await server.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, waiting for an init that may not reap it, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true or raise TimeoutError: for conditions, never fixed sleeps."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout:.1f}s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def daemon(tmp: str, name: str = "n0", *, slots: int = 4, export: str | None = None,
                 idle_timeout: float = 300.0, parent: Address | None = None,
                 secret: bytes | None = None, node_options: dict | None = None,
                 db: str | None = None, lease: float | None = None,
                 **limits):  # type: ignore[no-untyped-def]
    """A whole daemon in this process, composed as `brasil serve` composes it (cli/compose.py:
    tree, queries and a batch scheduler, its database ``db`` or ``tmp/NAME-batch.db``), on a
    Unix socket under ``tmp`` and an ephemeral loopback port; ``.unix`` and ``.tcp`` are its
    addresses, ``.scheduler`` its scheduler, ``.metrics`` its metrics service. Stopped (sessions killed) when the block ends.
    ``node_options`` go to the Node, ``lease`` to the scheduler, ``limits`` to the 9P server."""
    from brasil.cli.compose import BatchOptions, compose
    from brasil.node.daemon import Node
    node = Node(name, slots, export=export, idle_timeout=idle_timeout, **(node_options or {}))
    batch = BatchOptions(tmp, db or f"{tmp}/{name}-batch.db")
    if lease is not None:
        batch.lease = lease
    composed = await compose(node, [Address("unix", path=f"{tmp}/{name}.sock"),
                                    Address("tcp", "127.0.0.1", 0)],
                             secret=secret, parent=parent, batch=batch, **limits)
    d = composed.daemon
    d.unix, d.tcp = composed.listening[0][0], composed.listening[1][0]
    d.scheduler = composed.scheduler
    d.metrics = composed.metrics
    try:
        yield d
    finally:
        await composed.stop()


def spawn_serve(tmp: str, name: str = "sched", *extra: str, env: dict[str, str] | None = None,
                slots: int | None = 0) -> tuple[subprocess.Popen[bytes], str]:
    """`brasil serve` as its own process (what a kill -9, Slurm or the watchdog acts on), in a
    session of its own; returns it and its Unix address. ``slots`` None: the daemon's default
    (0: a scheduler's, which runs nothing itself)."""
    sock = os.path.join(tmp, f"{name}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)
    log = open(os.path.join(tmp, f"{name}.log"), "ab")
    p = subprocess.Popen(
        [sys.executable, "-m", "brasil.cli.main", "serve", "--listen", f"unix:{sock}",
         *(["--slots", str(slots)] if slots is not None else []), "--name", name,
         "--state-dir", os.path.join(tmp, f"{name}-state"), *extra],
        stdout=log, stderr=log, env={**os.environ, **(env or {})}, start_new_session=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"brasil serve did not start: {open(log.name).read()[-2000:]}")
        time.sleep(0.02)
    return p, f"unix:{sock}"


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End a process we started (and its group), waiting for it; SIGKILL if it lingers."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGCONT)
            os.killpg(p.pid, sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@contextlib.asynccontextmanager
async def serve_process(tmp: pathlib.Path, *extra: str):  # type: ignore[no-untyped-def]
    """:func:`spawn_serve` with the daemon's default slots, stopped when the block ends."""
    p, address = spawn_serve(str(tmp), "d", *extra, slots=None)
    try:
        yield p, address
    finally:
        stop(p)


@contextlib.asynccontextmanager
async def node_daemon(tmp: str, *, slots: int = 4, export: str | None = None,
                      idle_timeout: float = 300.0, name: str = "n0"):  # type: ignore[no-untyped-def]
    """A single node daemon; yields (node, its Unix socket address)."""
    async with daemon(tmp, name, slots=slots, export=export, idle_timeout=idle_timeout) as d:
        yield d.node, d.unix


@contextlib.asynccontextmanager
async def small_tree(tmp: str, slots: int = 2, root_slots: int | None = None):  # type: ignore[no-untyped-def]
    """root with two children, a and b, and b with one child b.1; ``slots`` each."""
    from brasil.ninep.client import Client
    async with contextlib.AsyncExitStack() as stack:
        root = await stack.enter_async_context(
            daemon(tmp, "root", slots=slots if root_slots is None else root_slots))
        a = await stack.enter_async_context(daemon(tmp, "a", slots=slots, parent=root.unix))
        b = await stack.enter_async_context(daemon(tmp, "b", slots=slots, parent=root.unix))
        b1 = await stack.enter_async_context(daemon(tmp, "b.1", slots=slots, parent=b.unix))
        await wait_for(lambda: "b.1" in b.children.by_name and b.children.by_name["b.1"].status,
                       timeout=10)
        await wait_for(lambda: all(n in root.children.by_name for n in ("a", "b")), timeout=10)
        await wait_for(lambda: len(root.children.status_lines()) == 3, timeout=10)
        c = await Client.connect(root.unix)
        try:
            yield {"root": root, "a": a, "b": b, "b.1": b1}, c
        finally:
            await c.close()


def date_wc() -> list[str]:
    """What `date | wc` prints here, as words: what a spliced `date` into `wc` must print."""
    import subprocess
    return subprocess.run("date | wc", shell=True, capture_output=True, text=True).stdout.split()


async def status_rows(c, sid: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """A session's status file, split: sub node slot state pid exit_status [error…]."""
    text = (await c.read(f"csrv/local/{sid}/status")).decode()
    return [ln.split() for ln in text.splitlines()]


L = "csrv/local"


async def new_session(c) -> str:  # type: ignore[no-untyped-def]
    return (await c.read(f"{L}/clone")).decode().strip()


async def ctl(c, sid: str, cmd: str) -> None:  # type: ignore[no-untyped-def]
    await c.write(f"{L}/{sid}/ctl", cmd + "\n")


async def session(c, cmds: list[str]) -> str:  # type: ignore[no-untyped-def]
    """A new session with ``cmds`` written to its ctl, one write each."""
    sid = await new_session(c)
    for cmd in cmds:
        await ctl(c, sid, cmd)
    return sid


@contextlib.asynccontextmanager
async def tree_of(tmp: str, *fanouts: int, slots: int = 2, timeout: float = 20,
                  export_root: str | None = None, **options):  # type: ignore[no-untyped-def]
    """A tree in this process: n0; ``fanouts[0]`` children n1…; under each ``fanouts[1]``
    children nI.1…; and so on. ``options`` go to every daemon (``daemon``); with
    ``export_root``, each exports a directory of its own, EXPORT_ROOT/NAME (made here, as
    `cluster up --export-root` does). Yields the daemons by name and a client of the root,
    once the root has heard of every node."""
    from brasil.ninep.client import Client

    def own(name: str) -> dict:  # type: ignore[type-arg]
        if export_root is None:
            return options
        pathlib.Path(export_root, name).mkdir(parents=True, exist_ok=True)
        return {**options, "export": f"{export_root}/{name}"}
    async with contextlib.AsyncExitStack() as stack:
        nodes = {"n0": await stack.enter_async_context(daemon(tmp, "n0", slots=slots,
                                                              **own("n0")))}

        async def under(parent: str, fanouts: tuple[int, ...]) -> None:  # depth first
            for i in range(1, fanouts[0] + 1 if fanouts else 1):
                name = f"n{i}" if parent == "n0" else f"{parent}.{i}"
                nodes[name] = await stack.enter_async_context(
                    daemon(tmp, name, slots=slots, parent=nodes[parent].unix, **own(name)))
                await under(name, fanouts[1:])
        await under("n0", fanouts)
        await wait_for(lambda: len(nodes["n0"].children.status_lines()) == len(nodes) - 1,
                       timeout=timeout)
        c = await Client.connect(nodes["n0"].unix)
        try:
            yield nodes, c
        finally:
            await c.close()


def tree_124(tmp: str, slots: int = 2):  # type: ignore[no-untyped-def]
    """A 1+2+4 tree in this process: n0; n1, n2 under it; n1.1, n1.2, n2.1, n2.2 below."""
    return tree_of(tmp, 2, 2, slots=slots)


def tree_13(tmp: str, slots: int = 2):  # type: ignore[no-untyped-def]
    """A 1+3 tree in this process: n0 and its children n1, n2, n3."""
    return tree_of(tmp, 3, slots=slots)


def push_inputs(root: pathlib.Path, seed: int, dirs: int, per_dir: int, most_lines: int,
                words: int) -> pathlib.Path:
    """The PUSH examples' inputs: DIRS directories of text files of 1…MOST_LINES lines, and a
    ``corpus`` of 20,000 ten-word lines drawn from WORDS words; the same for the same seed."""
    rnd = random.Random(seed)
    for d in range(dirs):
        (root / f"d{d}").mkdir()
        for i in range(per_dir):
            (root / f"d{d}" / f"f{i}.txt").write_text("x\n" * rnd.randrange(1, most_lines))
    vocabulary = [f"w{i}" for i in range(words)]
    (root / "corpus").write_text("\n".join(" ".join(rnd.choice(vocabulary) for _ in range(10))
                                           for _ in range(20000)) + "\n")
    return root
