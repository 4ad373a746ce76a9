"""The code blocks of a Markdown document, and the shell commands in them.

tests/test_docs.py runs the README's and docs' examples as written; this module only reads them.
Blocks are fenced (```) or indented by four spaces after a blank line (the README's). A line's
trailing `# comment` is cut where `#` starts a shell word outside quotes (so `|#|` and `'#'`
stay); a line holding only a comment is a comment; commands on one line separated by a top-level
`;` are separate commands.
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass
class Block:
    file: str  # relative to the repository, e.g. "docs/batch.md"
    line: int  # of its first line, from 1
    lines: list[tuple[int, str]]  # (line number, text without the block's indentation)
    lang: str = ""

    @property
    def first(self) -> str:
        return next((t.strip() for _, t in self.lines if t.strip()), "")

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass
class Command:
    text: str  # the command, comment cut
    comment: str  # what followed `#`, stripped ("" when none)
    line: int


def blocks(path: pathlib.Path, name: str) -> list[Block]:
    """Every code block of the Markdown file at ``path`` (``name`` is how it is reported)."""
    out: list[Block] = []
    lines = path.read_text().split("\n")
    i = 0
    prev_blank = True
    while i < len(lines):
        text = lines[i]
        if text.startswith("```"):
            lang, start, body = text[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append((i + 1, lines[i]))
                i += 1
            out.append(Block(name, start + 1, body, lang))
            i += 1
            prev_blank = False
            continue
        if prev_blank and text.startswith("    ") and text.strip():
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append((i + 1, lines[i][4:]))
                i += 1
            while body and not body[-1][1].strip():
                body.pop()
            out.append(Block(name, body[0][0], body))
            prev_blank = False
            continue
        prev_blank = not text.strip()
        i += 1
    return out


def _split(line: str) -> tuple[list[str], str]:
    """``line`` cut at its comment and at top-level ``;``: (commands, comment)."""
    parts: list[str] = []
    cur: list[str] = []
    quote = ""
    depth = 0  # inside $( … )
    i = 0
    while i < len(line):
        c = line[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            cur.append(line[i:i + 2])
            i += 2
            continue
        elif quote == '"':
            quote = "" if c == '"' else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            parts.append("".join(cur))
            return [p.strip() for p in parts if p.strip()], line[i + 1:].strip()
        elif line.startswith("$(", i):
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif c == ";" and not depth:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()], ""


def commands(block: Block) -> list[Command]:
    """The shell commands of ``block``, in order (a trailing backslash joins lines)."""
    out: list[Command] = []
    pending = ""
    for n, text in block.lines:
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        cmds, comment = _split(pending + text)
        pending = ""
        for i, cmd in enumerate(cmds):
            out.append(Command(cmd, comment if i == len(cmds) - 1 else "", n))
    return out
