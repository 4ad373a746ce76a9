"""The tools at a real terminal: a pseudo-terminal, and the screen a person would see.

`pexpect` runs the command on a pty (so isatty() is true for it, and the status line is drawn);
`pyte` plays every byte it wrote, escape sequences included, onto a virtual screen. Tests assert on
that final screen: every output line present, no status left behind, no traceback.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile

import pexpect
import pyte

BIN = os.path.dirname(sys.executable)


@dataclasses.dataclass
class Screen:
    lines: list[str]  # the final screen, right-stripped, trailing blank lines dropped
    status: int
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def at_terminal(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                rows: int = 50, cols: int = 120, timeout: float = 120) -> Screen:
    """Run ``argv`` on a fresh pty of ``rows``×``cols`` until it ends; return the screen."""
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', os.defpath)}",
                "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows),
                **(env or {})}
    child = pexpect.spawn(argv[0], argv[1:], env=full_env, cwd=cwd, dimensions=(rows, cols),
                          timeout=timeout)
    raw = b""
    try:
        while True:
            try:
                raw += child.read_nonblocking(65536, timeout=timeout)
            except pexpect.EOF:
                break
    finally:
        child.close()
    status = child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0)
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    stream.feed(raw)  # the pty turned each \n into \r\n, as a terminal shows it
    lines = [ln.rstrip() for ln in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(lines, status, raw)


class ReadmeTree:
    """A tree made as the README makes it, on one machine: `brasil cluster up … --dir D`."""

    def __init__(self, depth: int = 1, fanout: int = 3, slots: int = 2,
                 extra: tuple[str, ...] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="brasil-readme-")
        self.args = ["--depth", str(depth), "--fanout", str(fanout), "--slots", str(slots), *extra]

    def __enter__(self) -> ReadmeTree:
        r = subprocess.run([os.path.join(BIN, "brasil"), "cluster", "up", *self.args,
                            "--dir", self.dir], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"cluster up failed: {r.stderr}")
        return self

    @property
    def env(self) -> dict[str, str]:
        return {"BRASIL": f"unix:{self.dir}/n0.sock",
                "BRASIL_SECRET_FILE": f"{self.dir}/secret"}

    def __exit__(self, *exc: object) -> None:
        subprocess.run([os.path.join(BIN, "brasil"), "cluster", "down", "--dir", self.dir],
                       capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)
