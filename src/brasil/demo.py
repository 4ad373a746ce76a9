"""`make demo`: the main job on embedded defaults.

Today Brasil is its 9P core: this serves a small synthetic tree (static, generated, ctl and stream
files) on a private Unix socket, then drives it with the `brasil` command line exactly as a user
would, and prints what each command prints. Later layers (the node daemon, the tree) replace the
tree served here with the real namespace.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import sys
import tempfile
import time

from .ninep.errors import NinepError
from .ninep.server import Server
from .ninep.synthetic import (CommandTable, CtlFile, DynamicDir, Entry, GeneratedFile, StaticFile,
                              Stream, StreamFile, TableDir)
from .ninep.transport import Address


class DemoCtl(CtlFile):
    commands = CommandTable()

    def __init__(self, owner: "DemoTree") -> None:
        super().__init__()
        self.owner = owner

    def state(self) -> str:
        return f"notes {len(self.owner.notes.children_names())}"

    @commands.command("note TEXT…", raw=True)
    def note(self, args: list[str]) -> None:
        name = f"note{len(self.owner.notes.children_names())}"
        self.owner.notes.add(name, StaticFile(args[0] + "\n", mode=0o444))


class Notes(DynamicDir):
    def children_names(self) -> list[str]:
        return [c.name for c in self.children()]


class DemoTree:
    def __init__(self) -> None:
        self.started = time.time()
        self.notes = Notes()
        self.pipe = Stream()
        self.root = TableDir([
            Entry("arch", 0o444, lambda o: StaticFile(f"{platform.system().lower()} "
                                                       f"{platform.machine()}\n")),
            Entry("uptime", 0o444, lambda o: GeneratedFile(
                lambda: f"{time.time() - self.started:.3f}s\n")),
            Entry("ctl", 0o600, lambda o: DemoCtl(self)),
            Entry("pipe", 0o600, lambda o: StreamFile(self.pipe, self.pipe)),
            Entry("notes", 0o555, lambda o: self.notes),
        ])


async def run_cli(sock: str, *argv: str, stdin: bytes | None = None) -> None:
    print(f"$ brasil {' '.join(shlex.quote(a) for a in argv)}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", *argv, "--at", f"unix:{sock}",
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate(stdin)
    if out:
        sys.stdout.write("  " + out.decode().rstrip("\n").replace("\n", "\n  ") + "\n")
    if proc.returncode:
        print(f"  (exit status {proc.returncode})")


async def main() -> int:
    tree = DemoTree()
    with tempfile.TemporaryDirectory(prefix="brasil-demo-") as tmp:
        sock = os.path.join(tmp, "demo.sock")
        server = Server(tree.root)
        await server.listen(Address("unix", path=sock))
        print(f"serving a synthetic tree over 9P2000 at unix:{sock}\n")
        try:
            await run_cli(sock, "ls", "-l", "/")
            await run_cli(sock, "cat", "/arch", "/uptime")
            await run_cli(sock, "write", "/ctl", "note", "files", "are", "the", "interface")
            await run_cli(sock, "write", "/ctl", "note", "second thoughts")
            await run_cli(sock, "cat", "/ctl")
            await run_cli(sock, "ls", "/notes")
            await run_cli(sock, "cat", "/notes/note0", "/notes/note1")
            await run_cli(sock, "write", "/ctl", "frobnicate")
            tree.pipe.write_nowait(b"a stream: read blocks until data, ends at EOF\n")
            tree.pipe.close()
            await run_cli(sock, "cat", "/pipe")
            await run_cli(sock, "stat", "/arch")
        finally:
            await server.close()
    print("\ndone: every command above went over a real 9P connection to the server.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except NinepError as e:
        print(f"demo: {e}", file=sys.stderr)
        sys.exit(1)
