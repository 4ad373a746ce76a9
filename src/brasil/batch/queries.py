"""Read-only views of the database: the texts of ``jobs``, ``summary`` and ``events``.

They run on the store's reading connection (WAL: readers never wait for the writer), so listing
100,000 jobs does not hold up a single report.
"""

from __future__ import annotations

import base64

from .lifecycle import JOB_STATES, TERMINAL
from .store import Tx


def _clean(text: str | None) -> str:
    return (text or "").replace("\t", " ").replace("\n", " ")


def job_lines(tx: Tx, tag: str | None, job: int | None = None, summary: bool = True) -> str:
    """``ID STATE TAG NAME EXIT CMD REASON WORKER STARTED ENDED``, tab-separated, one line per
    job; then the summary. WORKER, STARTED and ENDED (seconds since the epoch, ``-`` if not yet)
    are those of its winning execution, or else of its latest."""
    where, args = "", list[object]()
    if tag is not None:
        where, args = " WHERE j.tag = ?", [tag]
    elif job is not None:
        where, args = " WHERE j.id = ?", [job]
    rows = tx.all("SELECT j.id, j.state, j.tag, j.name, j.exit_status, j.cmd, j.reason, e.worker, "
                  "e.started, e.ended FROM jobs j LEFT JOIN executions e ON e.id = COALESCE("
                  "j.winner, (SELECT max(x.id) FROM executions x WHERE x.job = j.id))" + where
                  + " ORDER BY j.id", args)
    out = [f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3] or '-'}\t{'-' if r[4] is None else r[4]}\t"
           f"{_clean(r[5])}\t{_clean(r[6])}\t{r[7] or '-'}\t{_time(r[8])}\t{_time(r[9])}\n"
           for r in rows]
    if summary:
        out.append(_summary_line({s: sum(1 for r in rows if r[1] == s) for s in JOB_STATES}))
    return "".join(out)


def _time(t: float | None) -> str:
    return "-" if t is None else f"{t:.3f}"


def _summary_line(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    states = " ".join(f"{s} {counts.get(s, 0)}" for s in JOB_STATES)
    return f"summary total {total} {states}\n"


def summary(tx: Tx, tag: str | None, job: int | None = None) -> str:
    where, args = "", list[object]()
    if tag is not None:
        where, args = " WHERE tag = ?", [tag]
    elif job is not None:
        where, args = " WHERE id = ?", [job]
    counts = {r[0]: int(r[1]) for r in tx.all(
        "SELECT state, count(*) FROM jobs" + where + " GROUP BY state", args)}
    return _summary_line(counts)


def parse_summary(text: str) -> dict[str, int]:
    words = text.split()
    if words[:1] != ["summary"]:
        raise ValueError(f"not a summary line: {text[:80]!r}")
    return {words[i]: int(words[i + 1]) for i in range(1, len(words) - 1, 2)}


def all_ended(text: str) -> bool:
    c = parse_summary(text)
    return sum(c.get(s, 0) for s in TERMINAL) == c.get("total", 0)


def events(tx: Tx, tag: str | None) -> str:
    """``TIME KIND JOB EXECUTION WORKER DETAIL``, one line per event, in time order."""
    if tag is None:
        rows = tx.all("SELECT t, kind, job, execution, worker, detail FROM events ORDER BY t")
    else:
        rows = tx.all("SELECT e.t, e.kind, e.job, e.execution, e.worker, e.detail FROM events e "
                      "JOIN jobs j ON j.id = e.job WHERE j.tag = ? ORDER BY e.t", (tag,))
    return "".join(f"{r[0]:.6f} {r[1]} {'-' if r[2] is None else r[2]} "
                   f"{'-' if r[3] is None else r[3]} {r[4] or '-'} {_clean(r[5])}".rstrip() + "\n"
                   for r in rows)


def output(tx: Tx, job: int) -> bytes | None:
    """The text of ``job/ID/output``: a header line, ``job ID STATE execution T worker W status
    S size N kept K place HOST:PATH`` (``execution -`` when none has ended yet), then the last
    K bytes of that execution's output. The execution is the winner's of a job that succeeded,
    else the last that ended with a status. None: there is no such job."""
    row = tx.one("SELECT state, winner FROM jobs WHERE id = ?", (job,))
    if row is None:
        return None
    state, winner = row
    which, args = (" AND e.id = ?", (job, winner)) if winner is not None else ("", (job,))
    ex = tx.one("SELECT e.id, e.worker, e.status, o.size, o.tail, o.place FROM executions e "
                "LEFT JOIN outputs o ON o.execution = e.id WHERE e.job = ? AND e.status IS NOT "
                "NULL" + which + " ORDER BY e.id DESC LIMIT 1", args)
    if ex is None:
        return f"job {job} {state} execution -\n".encode()
    tail = base64.b64decode(ex[4]) if ex[4] else b""
    return (f"job {job} {state} execution {ex[0]} worker {ex[1]} status {ex[2]} size "
            f"{ex[3] or 0} kept {len(tail)} place {_clean(ex[5]) or '-'}\n").encode() + tail
