"""ctl files: writes are commands, dispatched through a command table; reads give one line of state.

As in Plan 9's lib9p, a bad command fails the write with an error that quotes it and says what is
expected (``bad # args to command "kill 1 2"; usage: kill [SIG]``), and nothing is half done.
"""

from __future__ import annotations

import errno
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import NinepError
from .maybe import Maybe, is_awaitable
from .synthetic import Handle, Inode, _b

# ---- ctl files ------------------------------------------------------------------------------------

QUOTE_LIMIT = 100


def excerpt(text: str, limit: int = QUOTE_LIMIT) -> str:
    """At most ``limit`` characters of ``text``, for quoting it in an error or a log line."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    min_args: int
    max_args: int | None
    raw: bool  # one argument: the rest of the line, as typed (for exec)
    run: Callable[..., Any]


class CommandTable:
    """Commands of a ctl file, by verb. Errors quote the bad command and say what is expected."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}

    def command(self, usage: str, *, args: tuple[int, int | None] | None = None,
                raw: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``fn(owner, args)``; ``usage`` is e.g. ``"res N [os [arch]]"``."""
        words = usage.split()
        name = words[0]
        if args is None:
            required = sum(1 for w in words[1:] if not w.startswith("["))
            optional = sum(1 for w in words[1:] if w.startswith("["))
            args = (required, None if "…" in usage or "..." in usage else required + optional)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.commands[name] = Command(name, usage, args[0], args[1], raw, fn)
            return fn
        return register

    def expected(self) -> str:
        return "; ".join(c.usage for c in self.commands.values())

    def parse(self, line: str) -> tuple[Command, list[str]]:
        verb, _, rest = line.strip().partition(" ")
        cmd = self.commands.get(verb)
        shown = excerpt(line.strip())
        if cmd is None:
            raise NinepError(f'unknown command "{shown}"; expected one of: {self.expected()}',
                             errno.EINVAL)
        if cmd.raw:
            args = [rest.strip()] if rest.strip() else []
        else:
            try:
                args = shlex.split(rest)
            except ValueError as e:
                raise NinepError(f'bad quoting in command "{shown}": {e}', errno.EINVAL) from None
        if len(args) < cmd.min_args or (cmd.max_args is not None and len(args) > cmd.max_args):
            raise NinepError(f'bad # args to command "{shown}"; usage: {cmd.usage}', errno.EINVAL)
        return cmd, args


class CtlFile(Inode):
    """Writes are commands (one per line); reads give one line of state (:meth:`state`)."""

    commands: ClassVar[CommandTable] = CommandTable()

    def __init__(self, name: str = "", mode: int = 0o600) -> None:
        super().__init__(name, mode)

    def state(self) -> str:
        return ""

    def open(self, mode: int) -> Handle:
        return CtlHandle(self)

    def execute(self, line: str) -> Maybe[None]:
        cmd, args = self.commands.parse(line)
        return cmd.run(self, args)


class CtlHandle(Handle):
    node: CtlFile

    def __init__(self, node: CtlFile) -> None:
        super().__init__(node)
        self._snapshot: bytes | None = None

    def read(self, offset: int, count: int) -> bytes:
        if offset == 0 or self._snapshot is None:
            state = self.node.state()
            self._snapshot = _b(state + ("\n" if state and not state.endswith("\n") else ""))
        return self._snapshot[offset:offset + count]

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NinepError("ctl commands must be UTF-8 text") from None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            return len(data)
        return self._run(lines, 0, len(data))

    def _run(self, lines: list[str], i: int, n: int) -> Maybe[int]:
        while i < len(lines):
            r = self.node.execute(lines[i])
            i += 1
            if is_awaitable(r):
                return self._finish(r, lines, i, n)
        return n

    async def _finish(self, pending: Any, lines: list[str], i: int, n: int) -> int:
        await pending
        r = self._run(lines, i, n)
        return await r if is_awaitable(r) else r
