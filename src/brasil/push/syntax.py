"""PUSH's language: sequences of dataflow pipelines whose commands stay text for /bin/sh.

The parser only finds PUSH's own operators — ``|``, ``|<``, ``|<[…]``, ``>|``, ``>|[…]``,
``|#|``, ``|#[…]|`` between commands, and ``;``, newlines, ``&&``, ``||`` between pipelines —
outside quotes, ``$(…)``, backquotes, ``${…}``, parentheses and braces. Everything else is left
untouched for /bin/sh: quoting, redirections, globs, variables. Leading ``NAME=value`` words of a
pipeline that name PUSH's variables (``IRS``, ``ORS``, ``KEY``) configure that pipeline; a
statement of assignments alone sets them for the pipelines that follow. Every node keeps its
offset, so an error says the line and column and what was expected there, as mvdan/sh does.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

PUSH_VARIABLES = ("IRS", "ORS", "KEY")
# Copies multiply through nested fan-outs (200 nested default fan-outs are 2^200 copies), so the
# language has caps, checked before a plan is built: copies in all (plan.py adds them up, stage
# by stage, before making any) and fan-outs open at once. Both are far beyond real pipelines.
MAX_COPIES = 65536
MAX_NESTING = 32
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class PushSyntaxError(Exception):
    def __init__(self, source: str, offset: int, message: str) -> None:
        line = source.count("\n", 0, offset) + 1
        col = offset - (source.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"syntax error at line {line}, column {col}: {message}")
        self.line, self.column, self.message = line, col, message


@dataclass
class Stage:
    text: str  # a shell command, as written
    offset: int


@dataclass
class Link:
    kind: str  # "pipe", "fanout", "fanin" or "hash"
    offset: int
    copies: int | None = None  # |<[n], |#[n]|
    rs: str | None = None  # rs=… in the brackets: the record module
    key: str | None = None  # key=… in |#[…]|
    keep: bool = False  # keep input order (fan-out regions run per block)

    @property
    def symbol(self) -> str:
        return {"pipe": "|", "fanout": "|<", "fanin": ">|", "hash": "|#|"}[self.kind]


@dataclass
class Pipeline:
    stages: list[Stage]
    links: list[Link]  # links[i] joins stages[i] and stages[i + 1]
    assign: dict[str, str] = field(default_factory=dict)  # PUSH variables for this pipeline
    offset: int = 0


@dataclass
class Statement:
    """Pipelines joined by && and ||; ``ops[i]`` joins pipelines i and i+1. A statement of
    assignments alone has no pipelines."""

    pipelines: list[Pipeline]
    ops: list[str]
    assign: dict[str, str] = field(default_factory=dict)


# ---- scanning ----------------------------------------------------------------------------------

def _skip_quoted(src: str, i: int) -> int:
    """``src[i]`` opens a quote, ``$(``, ``${``, backquote or parenthesis: the offset after it
    closes. Unclosed: raises, pointing at the opening."""
    c = src[i]
    n = len(src)
    if c == "'":
        j = src.find("'", i + 1)
        if j < 0:
            raise PushSyntaxError(src, i, "unterminated single quote")
        return j + 1
    if c in '"`':
        j = i + 1
        while j < n:
            if src[j] == "\\":
                j += 2
                continue
            if src[j] == c:
                return j + 1
            if (c == '"' and src.startswith("$(", j)) or (c == '"' and src.startswith("${", j)):
                j = _skip_quoted(src, j + 1)
                continue
            j += 1
        raise PushSyntaxError(src, i, f"unterminated {'double quote' if c == chr(34) else 'backquote'}")
    close = {"(": ")", "{": "}"}[c]
    j = i + 1
    while j < n:
        if src[j] == close:
            return j + 1
        j = _skip(src, j, nested=True) or j + 1
    raise PushSyntaxError(src, i, f"no closing {close!r} for this {c!r}")


def _skip(src: str, i: int, nested: bool = False) -> int | None:
    """Past the construct that starts at ``i`` — an escape, a quote, ``$(…)``, ``${…}``, a
    parenthesis (and, ``nested`` in one, ``{``) — or None if nothing starts there."""
    c = src[i]
    if c == "\\":
        return i + 2
    if c in "'\"`" or c == "(":
        return _skip_quoted(src, i)
    if c == "$" and i + 1 < len(src) and src[i + 1] in "({":
        return _skip_quoted(src, i + 1)
    if nested and c == "{" and i > 0 and src[i - 1] == "$":
        return _skip_quoted(src, i)
    return None


@dataclass
class Token:
    kind: str  # "word" (command text), "link", "and", "or", "end"
    offset: int
    text: str = ""
    link: Link | None = None


def _options(src: str, start: int, end: int, link: Link) -> None:
    """``[4 rs=nul key=2 keep]``: copies, record module, key, keep order."""
    body = src[start:end]
    lex = shlex.shlex(body, posix=True)
    lex.whitespace += ","  # [4,rs=nul]; a comma inside quotes stays (key='^(.*?),')
    lex.whitespace_split = True
    try:
        words = list(lex)
    except ValueError as e:
        raise PushSyntaxError(src, start, f"bad options [{body}]: {e}") from None
    while words:
        w = words.pop(0)
        if w.isascii() and w.isdigit() and link.kind in ("fanout", "hash"):
            if int(w) < 1:
                raise PushSyntaxError(src, start, f"{link.symbol} needs 1 copy or more, not {w}")
            if len(w) > len(str(MAX_COPIES)) or int(w) > MAX_COPIES:
                raise PushSyntaxError(src, start, f"{link.symbol} may have at most {MAX_COPIES} "
                                      f"copies, not {w}")
            link.copies = int(w)
        elif w.startswith("rs="):
            link.rs = w[3:]
            if link.rs in ("fixed", "regex") and words:  # rs=fixed 4, unquoted
                link.rs += " " + words.pop(0)
        elif w.startswith("key=") and link.kind == "hash":
            link.key = w[4:]
        elif w == "keep" and link.kind in ("fanout", "fanin"):
            link.keep = True
        else:
            allowed = {"fanout": "a number of copies, rs=MODULE, keep",
                       "fanin": "rs=MODULE, keep",
                       "hash": "a number of copies, rs=MODULE, key=FIELD|REGEX"}[link.kind]
            raise PushSyntaxError(src, start, f"unknown option {w!r} for {link.symbol}; "
                                  f"expected {allowed}")


def _operator(src: str, i: int, kind: str) -> tuple[Link, int]:
    """The two characters of a PUSH operator at ``i`` and its ``[options]`` if any; the link and
    the index just past them."""
    link = Link(kind, i)
    j = i + 2
    if j < len(src) and src[j] == "[":
        k = _bracket(src, j)
        _options(src, j + 1, k, link)
        j = k + 1
    return link, j


def _bracket(src: str, i: int) -> int:
    """The ``]`` closing the options opened at ``i``: one inside quotes (a character class in
    ``key='([ab])'``) does not count."""
    j = i + 1
    while j < len(src):
        if src[j] in "'\"":
            j = _skip_quoted(src, j)
            continue
        if src[j] == "]":
            return j
        j += 1
    raise PushSyntaxError(src, i, "no closing ']' for these options")


def tokens(src: str) -> list[Token]:
    out: list[Token] = []
    n = len(src)
    i = 0
    start = 0  # where the current command text began

    def flush(upto: int) -> None:
        text = src[start:upto]
        if text.strip():
            lead = len(text) - len(text.lstrip())
            out.append(Token("word", start + lead, text.strip()))

    while i < n:
        c = src[i]
        skipped = _skip(src, i)
        if skipped is not None:
            i = skipped
            continue
        if c == "{" and (i == 0 or src[i - 1] in " \t\n;|&") and (i + 1 >= n or src[i + 1] in " \t\n"):
            i = _skip_quoted(src, i)
            continue
        if c == "#" and (i == 0 or src[i - 1] in " \t\n;|&(") and not src.startswith("#|", i) \
                and not src.startswith("#[", i):
            j = src.find("\n", i)
            flush(i)
            i = start = n if j < 0 else j
            continue
        tok: Token | None = None
        if src.startswith("|<", i):
            link, j = _operator(src, i, "fanout")
            tok = Token("link", i, link=link)
        elif src.startswith(">|", i) and i > 0 and src[i - 1].isdigit():
            i += 2  # 2>|f: sh's redirection that overrides noclobber, not a fan-in
            continue
        elif src.startswith(">|", i):
            link, j = _operator(src, i, "fanin")
            tok = Token("link", i, link=link)
        elif src.startswith("|#", i):
            link, j = _operator(src, i, "hash")
            if j >= n or src[j] != "|":
                raise PushSyntaxError(src, j, "expected '|' to close the hash pipe |#…|")
            j += 1
            tok = Token("link", i, link=link)
        elif src.startswith("||", i):
            tok, j = Token("or", i), i + 2
        elif c == "|":
            tok, j = Token("link", i, link=Link("pipe", i)), i + 1
        elif src.startswith("&&", i):
            tok, j = Token("and", i), i + 2
        elif c == "&":
            if (i > 0 and src[i - 1] in "<>") or src.startswith("&>", i):
                i += 1  # a redirection: 2>&1, &>file
                continue
            raise PushSyntaxError(src, i, "background jobs (&) are not supported; "
                                  "use ';' or a newline between pipelines")
        elif c in ";\n":
            tok, j = Token("end", i), i + 1
        if tok is None:
            i += 1
            continue
        flush(i)
        out.append(tok)
        i = start = j
    flush(n)
    out.append(Token("end", n))
    return out


# ---- parsing ------------------------------------------------------------------------------------

def _word_end(text: str, i: int = 0) -> int:
    """Where the shell word starting at ``i`` ends (quotes and substitutions included)."""
    n = len(text)
    while i < n and text[i] not in " \t\n":
        i = _skip(text, i) or i + 1
    return min(i, n)


def _take_assignments(tok: Token, source: str) -> tuple[dict[str, str], str, int]:
    """Leading ``IRS=… ORS=… KEY=…`` words of a command: removed and returned; other
    assignments (``LC_ALL=C sort``) stay in the command for /bin/sh."""
    assign: dict[str, str] = {}
    text, offset = tok.text, tok.offset
    while True:
        m = ASSIGNMENT.match(text)
        if not m or m.group(0)[:-1] not in PUSH_VARIABLES:
            break
        end = _word_end(text)
        try:
            word = shlex.split(text[:end])[0]
        except (ValueError, IndexError) as e:
            raise PushSyntaxError(source, offset, f"bad assignment: {e}") from None
        name, _, value = word.partition("=")
        assign[name] = value
        rest = text[end:]
        offset += len(text) - len(rest.lstrip())
        text = rest.lstrip()
        if not text:
            break
    return assign, text, offset


def parse(source: str) -> list[Statement]:
    toks = tokens(source.replace("\\\n", "  "))
    statements: list[Statement] = []
    i = 0

    def expect_command(at: int, after: str) -> None:
        raise PushSyntaxError(source, at, f"expected a command after {after}")

    while i < len(toks):
        if toks[i].kind == "end":
            i += 1
            continue
        pipelines: list[Pipeline] = []
        ops: list[str] = []
        standalone: dict[str, str] = {}
        while True:
            t = toks[i]
            if t.kind != "word":
                what = t.link.symbol if t.link else {"and": "&&", "or": "||"}.get(t.kind, t.kind)
                raise PushSyntaxError(source, t.offset, f"expected a command before {what!r}")
            assign, text, offset = _take_assignments(t, source)
            stages = [Stage(text, offset)] if text else []
            links: list[Link] = []
            i += 1
            while toks[i].kind == "link":
                link = toks[i].link
                assert link is not None
                i += 1
                if toks[i].kind != "word":
                    expect_command(toks[i].offset, repr(link.symbol))
                if not stages:
                    raise PushSyntaxError(source, link.offset,
                                          f"expected a command before {link.symbol!r}")
                links.append(link)
                stages.append(Stage(toks[i].text, toks[i].offset))
                i += 1
            if not stages:  # assignments alone
                if pipelines or toks[i].kind in ("and", "or"):
                    raise PushSyntaxError(source, t.offset, "expected a command after the "
                                          "assignments")
                standalone = assign
            else:
                pipelines.append(Pipeline(stages, links, assign, t.offset))
            if toks[i].kind in ("and", "or"):
                ops.append("&&" if toks[i].kind == "and" else "||")
                i += 1
                while toks[i].kind == "end" and toks[i].offset < len(source) and \
                        source[toks[i].offset] == "\n":
                    i += 1  # `a &&` newline `b`
                if toks[i].kind != "word":
                    expect_command(toks[i].offset, repr(ops[-1]))
                continue
            break
        statements.append(Statement(pipelines, ops, standalone))
        if toks[i].kind == "end":
            i += 1
    for st in statements:
        for p in st.pipelines:
            check_nesting(source, p)
    return statements


def check_nesting(source: str, p: Pipeline) -> None:
    """Every >| closes a |< before it (fan-out and fan-in nest like parentheses); a |< left
    open is legal: its copies' output goes to push's output. At most MAX_NESTING are open at
    once: the error says how deep the pipeline goes, at the first |< past the cap."""
    depth = deepest = 0
    too_deep: Link | None = None
    for link in p.links:
        if link.kind == "fanout":
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_NESTING and too_deep is None:
                too_deep = link
        elif link.kind == "fanin":
            if depth == 0:
                raise PushSyntaxError(source, link.offset, "'>|' has no '|<' before it to close")
            depth -= 1
    if too_deep is not None:
        raise PushSyntaxError(source, too_deep.offset, f"fan-outs nested {deepest} deep; at most "
                              f"{MAX_NESTING} may be open at once (close a |< with >| sooner)")
