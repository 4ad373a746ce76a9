"""`brasil report`: a workload's makespan, the thesis's overhead breakdown, and a Gantt chart.

Everything is computed from the scheduler's events (``tags/T/events``), the way Trellis computed
its tables 5.1–5.3 from its job database and placeholder logs — here one source holds both, since
workers report their own times (start, end, commit) along with the scheduler's (assign, and the
moment each report arrived, as ``notify=`` on ``finish`` and ``commit``). Times on different hosts
are compared as they are: keep the clocks in sync (NTP) for figures of milliseconds.

Per worker slot ("placeholder"), averaged over slots as the thesis does:

* job time: executions' run time (start → end), split into useful (the execution that counted)
  and redundant work wasted (executions killed, beaten, lost or refused);
* get job: assignment → start (delivery of the assignment and the fork);
* notify job complete / notify commit complete: end of run (or of commit) → the scheduler has it;
* commit changes: the winner's staging and applying; rollback: killed executions' clean-up;
* staggered start / end: a slot's first start after the first one, its last end before the last;
* idle: the rest of the span (work starvation: dependencies, or nothing left to run).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .api import Event, Job


@dataclass
class Run:
    token: int
    job: int
    worker: str
    slot: int = 0
    assigned: float = 0.0
    started: float | None = None
    ended: float | None = None
    status: int | None = None
    notify: float = 0.0
    commit_start: float | None = None
    commit_end: float | None = None
    commit_notify: float = 0.0
    redundant: bool = False
    outcome: str = "running"   # won, killed, lost, failed, refused, running
    stopped: float | None = None
    rolled_back: float | None = None

    @property
    def row(self) -> str:
        return f"{self.worker}/{self.slot}"

    def run_time(self) -> float:
        if self.started is None:
            return 0.0
        end = self.ended or self.stopped or self.started
        return max(end - self.started, 0.0)


@dataclass
class Report:
    tag: str
    jobs: list[Job]
    runs: list[Run]
    first_submit: float
    last_end: float
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def makespan(self) -> float:
        return max(self.last_end - self.first_submit, 0.0)


def _kv(detail: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in detail.split() if "=" in w)


def build(tag: str, jobs: list[Job], events: Iterable[Event]) -> Report:
    runs: dict[int, Run] = {}
    submits: list[float] = []
    ends: list[float] = []
    for e in events:
        if e.kind == "submit":
            submits.append(e.t)
            continue
        if e.kind in ("cancel", "fail", "retry"):
            if e.kind != "retry":
                ends.append(e.t)
            continue
        if e.execution is None:
            continue
        r = runs.get(e.execution)
        if r is None:
            r = runs[e.execution] = Run(e.execution, e.job or 0, e.worker or "?")
        if e.kind == "assign":
            r.assigned, r.redundant = e.t, e.detail == "redundant"
        elif e.kind == "start":
            r.started = e.t
            r.slot = int(e.detail) if e.detail.isdigit() else r.slot
        elif e.kind == "finish":
            r.ended = e.t
            r.status = int(e.detail.split()[0]) if e.detail else None
            r.notify = float(_kv(e.detail).get("notify", 0))
            if r.status != 0:
                r.outcome = "failed"
            elif r.outcome == "running":
                r.outcome = "won"  # until told otherwise: a non-isolated finish, or the winner
        elif e.kind == "commit_start":
            r.commit_start = e.t
        elif e.kind == "commit":
            r.commit_end = e.t
            r.commit_notify = float(_kv(e.detail).get("notify", 0))
            r.outcome = "won"
            ends.append(e.t + r.commit_notify)
        elif e.kind == "kill":
            r.outcome, r.stopped = "killed", e.t
        elif e.kind == "lease_lost":
            r.outcome, r.stopped = "lost", e.t
        elif e.kind == "refused":
            r.outcome = "refused"
        elif e.kind == "rollback":
            r.rolled_back = e.t
            if r.outcome in ("won", "running"):
                r.outcome = "refused"
    for r in runs.values():
        if r.outcome == "won" and r.commit_end is None and r.ended is not None:
            ends.append(r.ended + r.notify)
    first = min(submits) if submits else min((r.assigned for r in runs.values()), default=0.0)
    last = max(ends, default=first)
    rep = Report(tag, jobs, sorted(runs.values(), key=lambda r: r.token), first, last)
    rep.figures = breakdown(rep)
    return rep


def breakdown(rep: Report) -> dict[str, float]:
    runs = [r for r in rep.runs if r.started is not None]
    started = [(r, r.started) for r in rep.runs if r.started is not None]
    rows = sorted({r.row for r in runs})
    n = max(len(rows), 1)
    f: dict[str, float] = {}
    first_assign = min((r.assigned for r in rep.runs), default=rep.first_submit)
    f["makespan"] = rep.makespan
    f["useful span"] = max(rep.last_end - first_assign, 0.0)
    f["submission and polling"] = f["makespan"] - f["useful span"]
    useful = sum(r.run_time() for r in runs if r.outcome == "won")
    wasted = sum(r.run_time() for r in runs if r.outcome != "won")
    f["job time"] = useful / n
    f["redundant work wasted"] = wasted / n
    f["get job"] = sum(max(s - r.assigned, 0) for r, s in started) / n
    f["notify job complete"] = sum(r.notify for r in runs) / n
    f["commit changes"] = sum(max(r.commit_end - r.commit_start, 0) for r in runs
                              if r.commit_start and r.commit_end) / n
    f["notify commit complete"] = sum(r.commit_notify for r in runs) / n
    f["rollback"] = sum(max(r.rolled_back - (r.stopped or r.ended or r.rolled_back), 0)
                        for r in runs if r.rolled_back) / n
    starts = {row: min(s for r, s in started if r.row == row) for row in rows}
    stops = {row: max((r.commit_end or r.ended or r.stopped or s) for r, s in started
                      if r.row == row) for row in rows}
    if rows:
        f["staggered start"] = sum(s - min(starts.values()) for s in starts.values()) / n
        f["staggered end"] = sum(max(stops.values()) - s for s in stops.values()) / n
    else:
        f["staggered start"] = f["staggered end"] = 0.0
    accounted = sum(f[k] for k in ("job time", "redundant work wasted", "get job",
                                   "notify job complete", "commit changes",
                                   "notify commit complete", "rollback", "staggered start",
                                   "staggered end"))
    f["idle (work starvation)"] = max(f["useful span"] - accounted, 0.0)
    f["slots"] = float(len(rows))
    f["executions"] = float(len(runs))
    f["killed"] = float(sum(1 for r in runs if r.outcome == "killed"))
    f["lost"] = float(sum(1 for r in runs if r.outcome == "lost"))
    f["redundant"] = float(sum(1 for r in rep.runs if r.redundant))
    f["wasted share"] = wasted / (useful + wasted) if useful + wasted else 0.0
    return f


def text(rep: Report) -> str:
    f = rep.figures
    states: dict[str, int] = {}
    for j in rep.jobs:
        states[j.state] = states.get(j.state, 0) + 1
    lines = [
        f"workload {rep.tag}: {len(rep.jobs)} jobs ("
        + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + f"), "
        f"{int(f['slots'])} worker slots, {int(f['executions'])} executions "
        f"({int(f['redundant'])} redundant, {int(f['killed'])} killed, {int(f['lost'])} lost)",
        "",
        "High-level (thesis table 5.1)                 seconds",
        f"  makespan                                 {f['makespan']:9.3f}",
        f"  submission and polling                   {f['submission and polling']:9.3f}",
        f"  useful span (first assignment → end)     {f['useful span']:9.3f}",
        "",
        "Per worker slot, averaged (tables 5.2, 5.3)   seconds",
    ]
    for key in ("job time", "redundant work wasted", "get job", "notify job complete",
                "commit changes", "notify commit complete", "rollback", "staggered start",
                "staggered end", "idle (work starvation)"):
        lines.append(f"  {key:<40} {f[key]:9.3f}")
    lines += ["", f"Redundant work wasted: {f['wasted share']:.1%} of all execution time"]
    return "\n".join(lines) + "\n"


COLORS = {"won": "#2e8b57", "killed": "#d62728", "lost": "#7f7f7f", "failed": "#ff7f0e",
          "refused": "#9467bd", "running": "#1f77b4"}


def gantt_png(rep: Report) -> bytes:
    import matplotlib.pyplot as plt
    fig = gantt_figure(rep)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def gantt_figure(rep: Report) -> Any:
    """The Gantt chart as a matplotlib figure (close it with ``plt.close``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    started = [(r, r.started) for r in rep.runs if r.started is not None]
    rows = sorted({r.row for r, _ in started})
    index = {row: i for i, row in enumerate(rows)}
    t0 = rep.first_submit
    height = 1.6 + 0.42 * max(len(rows), 1)  # inches
    fig, ax = plt.subplots(figsize=(11, height), dpi=110)
    for r, start in started:
        y = index[r.row]
        end = r.ended or r.stopped or start
        ax.broken_barh([(start - t0, max(end - start, 0.002))], (y - 0.38, 0.76),
                       facecolors=COLORS[r.outcome], edgecolor="black", linewidth=0.3,
                       hatch="//" if r.redundant else None)
        if r.commit_start and r.commit_end:
            ax.broken_barh([(r.commit_start - t0, max(r.commit_end - r.commit_start, 0.002))],
                           (y - 0.38, 0.76), facecolors="#0b3d20", edgecolor="none")
        if r.outcome in ("killed", "lost") and r.stopped:
            ax.plot([r.stopped - t0], [y], marker="x", color="black", markersize=6)
    labelled = [(r, start, index[r.row]) for r, start in started]
    ax.axvline(rep.makespan, color="black", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first submission")
    ax.set_title(f"workload {rep.tag}: makespan {rep.makespan:.2f} s, "
                 f"{int(rep.figures['executions'])} executions on {len(rows)} slots", fontsize=10)
    handles = [Patch(facecolor=COLORS[k], label=k) for k in ("won", "killed", "lost", "failed",
                                                           "refused")]
    handles += [Patch(facecolor="white", edgecolor="black", hatch="//", label="redundant"),
                Patch(facecolor="#0b3d20", label="commit")]
    # The legend is the figure's, in a strip of its own at the bottom; the axes (with their
    # x-axis label) are laid out above that strip, so the two never overlap.
    strip = 0.4 / height
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=7,
               fontsize=8, frameon=False)
    ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout(rect=(0, strip, 1, 1))
    _label_bars(fig, ax, rep, labelled, t0)
    return fig


def _label_bars(fig: Any, ax: Any, rep: Report, bars: list[tuple[Run, float, int]],
                t0: float) -> None:
    """Each bar's job name (its id if unnamed), inside the bar, where it fits: a label wider
    than its bar is left out, so short bars stay readable as bars."""
    names = {j.id: j.name or str(j.id) for j in rep.jobs}
    renderer = fig.canvas.get_renderer()
    for r, began, y in bars:
        end = r.ended or r.stopped or began
        start = began - t0
        (x0, _), (x1, _) = ax.transData.transform([(start, y), (end - t0, y)])
        label = ax.text((start + end - t0) / 2, y,
                        names.get(r.job, str(r.job)), ha="center", va="center", fontsize=7,
                        color="white", clip_on=True)
        if label.get_window_extent(renderer).width > (x1 - x0) - 4:
            label.remove()


def write(rep: Report, path: str) -> None:
    png = gantt_png(rep)
    if path.endswith(".html"):
        page = (f"<!doctype html><meta charset=utf-8><title>brasil report {html.escape(rep.tag)}"
                f"</title><h1>workload {html.escape(rep.tag)}</h1><pre>{html.escape(text(rep))}"
                f"</pre><img alt='Gantt chart' src='data:image/png;base64,"
                f"{base64.b64encode(png).decode()}'>")
        with open(path, "w") as f:
            f.write(page)
    elif path.endswith(".png"):
        with open(path, "wb") as f:
            f.write(png)
    else:
        raise ValueError(f"--out {path}: give a .png or .html file name")
