"""The lines a worker and its scheduler exchange, one dataclass per message, encoded and decoded
here only (as ``ninep/messages.py`` does for 9P).

A worker writes reports to ``batch/workers/NAME/ctl``, any number per write, one per line; the
scheduler's orders come back, one per line, from reads of ``next``. The text is the protocol of
the versions before this module (workers and schedulers of either interoperate)::

    start T SLOT TIME           done T STATUS T0 T1 [WHY]     clean T T0 T1
    journaled T C0              committed T C1                commitfail T WHY
    gone T…                     renew T…                      output T SIZE BASE64 WHERE

    run JSON                    commit T    go T    kill T    discard T    ok T

T is an execution's token (its fencing token), times are seconds since the epoch with six
decimals. :func:`decode_report` checks every number against what the database keeps, so a bad
report is refused with a sentence, not an overflow deep in a transaction.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from .jobfile import MAX_ID

MAX_OUTPUT_TAIL = 64 * 1024  # bytes of an output's end a worker may send (it sends 4 KiB)
MAX_WHERE = 4096  # characters of an output's HOST:PATH kept
USAGE = ("start T SLOT TIME, done T STATUS T0 T1 [WHY], clean T T0 T1, journaled T C0, "
         "committed T C1, commitfail T WHY, gone T…, renew T…, output T SIZE BASE64 WHERE")


# ---- reports: worker → scheduler ----

@dataclass(slots=True)
class Start:
    """The execution started on ``slot`` at ``t0`` (sent with the next write: it needs no answer)."""
    token: int
    slot: int
    t0: float


@dataclass(slots=True)
class Done:
    """It ended with ``status``; ``why`` says what went wrong, if it did."""
    token: int
    status: int
    t0: float
    t1: float
    why: str = ""


@dataclass(slots=True)
class Clean:
    """An isolated execution ended 0 and changed nothing: nothing to commit."""
    token: int
    t0: float
    t1: float


@dataclass(slots=True)
class Journaled:
    """Its changes are staged and the journal whole (the commit point), since ``c0``."""
    token: int
    c0: float


@dataclass(slots=True)
class Committed:
    token: int
    c1: float


@dataclass(slots=True)
class CommitFail:
    token: int
    why: str


@dataclass(slots=True)
class Gone:
    """These executions are no more here (killed, rolled back): their slots are free."""
    tokens: list[int]


@dataclass(slots=True)
class Renew:
    """The worker still holds these executions: their leases go on."""
    tokens: list[int]


@dataclass(slots=True)
class Output:
    """The end of an execution's output (``tail``, base64, as the database keeps it), its whole
    size, and where the whole file is (``HOST:PATH``)."""
    token: int
    size: int
    tail: str
    where: str


Report = Start | Done | Clean | Journaled | Committed | CommitFail | Gone | Renew | Output


def _tokens(words: list[int]) -> str:
    return "".join(f" {t}" for t in words)


def encode_report(m: Report) -> str:
    """The line (without its newline)."""
    if isinstance(m, Start):
        return f"start {m.token} {m.slot} {m.t0:.6f}"
    if isinstance(m, Done):
        return f"done {m.token} {m.status} {m.t0:.6f} {m.t1:.6f}" + (f" {m.why}" if m.why else "")
    if isinstance(m, Clean):
        return f"clean {m.token} {m.t0:.6f} {m.t1:.6f}"
    if isinstance(m, Journaled):
        return f"journaled {m.token} {m.c0:.6f}"
    if isinstance(m, Committed):
        return f"committed {m.token} {m.c1:.6f}"
    if isinstance(m, CommitFail):
        return f"commitfail {m.token} {m.why}"
    if isinstance(m, Gone):
        return "gone" + _tokens(m.tokens)
    if isinstance(m, Renew):
        return "renew" + _tokens(m.tokens)
    return f"output {m.token} {m.size} {m.tail} {m.where}"


def token(word: str) -> int:
    """An execution's token (or a size): 0 … MAX_ID."""
    if len(word) > 20:
        raise ValueError(word)
    n = int(word)
    if not 0 <= n <= MAX_ID:
        raise ValueError(word)
    return n


def _status(word: str) -> int:
    if len(word) > 20:
        raise ValueError(word)
    n = int(word)
    if not -(1 << 31) <= n < 1 << 31:
        raise ValueError(word)
    return n


def _time(word: str) -> float:
    x = float(word)
    if not math.isfinite(x):
        raise ValueError(word)
    return x


def decode_report(line: str) -> Report | None:
    """The report on ``line`` (None for an empty one); ValueError or IndexError if it is not one
    (the scheduler refuses the write, quoting :data:`USAGE`). Words past those a report has are
    ignored, as they always were."""
    verb, _, rest = line.partition(" ")
    if verb == "renew":
        return Renew([token(w) for w in rest.split()])
    if verb == "start":
        w = rest.split(" ", 4)
        return Start(token(w[0]), _status(w[1]), _time(w[2]))
    if verb == "done":
        w = rest.split(" ", 4)
        return Done(token(w[0]), _status(w[1]), _time(w[2]), _time(w[3]),
                    w[4] if len(w) > 4 else "")
    if verb == "clean":
        w = rest.split(" ", 3)
        return Clean(token(w[0]), _time(w[1]), _time(w[2]))
    if verb == "journaled":
        w = rest.split(" ", 2)
        return Journaled(token(w[0]), _time(w[1]))
    if verb == "committed":
        w = rest.split(" ", 2)
        return Committed(token(w[0]), _time(w[1]))
    if verb == "commitfail":
        w = rest.split(" ", 1)
        return CommitFail(token(w[0]), w[1] if len(w) > 1 else "")
    if verb == "gone":  # (a negative token, which no execution has, is passed over)
        return Gone([token(w) for w in rest.split() if not w.startswith("-")])
    if verb == "output":
        w = rest.split(" ", 3)
        tail = base64.b64decode(w[2], validate=True)
        if len(w) < 4 or len(tail) > MAX_OUTPUT_TAIL or not w[3]:
            raise ValueError(verb)
        return Output(token(w[0]), token(w[1]), w[2], w[3][:MAX_WHERE])
    if not verb:
        return None
    raise ValueError(verb)


# ---- orders: scheduler → worker ----

@dataclass(slots=True)
class Run:
    """Run a job: the execution ``token`` of job ``job``."""
    token: int
    job: int
    cmd: str
    home: str
    env: dict[str, str]
    isolate: bool
    timeout: int = 0  # seconds it may run (0: no limit)

    def record(self) -> dict[str, Any]:
        """As the JSON of a ``run`` line (``timeout`` only when there is one)."""
        r: dict[str, Any] = {"t": self.token, "job": self.job, "cmd": self.cmd, "home": self.home,
                             "env": self.env, "isolate": self.isolate}
        if self.timeout:
            r["timeout"] = self.timeout
        return r


@dataclass(slots=True)
class Order:
    """``commit`` (stage your changes), ``go`` (apply them), ``kill``, ``discard`` (throw the
    work away), ``ok`` (your report is taken: forget the execution)."""
    verb: str
    token: int


ORDERS = frozenset({"commit", "go", "kill", "discard", "ok"})


def encode_run(r: Run) -> str:
    return "run " + json.dumps(r.record())


def encode_order(o: Run | Order) -> str:
    return encode_run(o) if isinstance(o, Run) else f"{o.verb} {o.token}"


def order(verb: str, token: int) -> str:
    """The line of ``Order(verb, token)`` (what the scheduler pushes to a worker)."""
    return encode_order(Order(verb, token))


def decode_order(line: str) -> Run | Order:
    """ValueError (or KeyError, for a ``run`` missing a field) if ``line`` is not an order."""
    verb, _, rest = line.partition(" ")
    if verb == "run":
        r = json.loads(rest)
        return Run(r["t"], r["job"], r["cmd"], r["home"], r["env"], r["isolate"],
                   int(r.get("timeout", 0)))
    if verb not in ORDERS:
        raise ValueError(verb)
    return Order(verb, int(rest))
