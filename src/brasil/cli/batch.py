"""`brasil worker/workers/submit/jobs/wait/cancel/report`: the batch layer's command line (SPEC §9).

All but `worker` are short clients of ``/csrv/local/batch`` (``brasil.batch.api``); `worker` is a
placeholder that runs until stopped; `workers N` starts N of them through a session, anywhere in
the tree, as the Brasil paper meant the layers to stack.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
from typing import Any

from ..exec.pychild import python_argv
from ..ninep.errors import NinepError
from .errors import UsageError
from .logs import daemon_logging
from .options import add_client_options, connect


def _at(p: argparse.ArgumentParser) -> None:
    add_client_options(p, "the scheduler's daemon (default: $BRASIL, then the local daemon's "
                       "Unix socket)", trace=True)


def _positive(what: str) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not {text!r}")
        if n < 1:
            fix = " (1 turns redundancy off)" if what == "redundancy" else ""
            raise argparse.ArgumentTypeError(f"{what} must be 1 or more{fix}, not {n}")
        return n
    return parse


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--after takes job ids, e.g. 12,13 (not {text!r})")


SUBMIT_EPILOG = """job files: one command per line (# comments, blank lines skipped), or named jobs
with dependencies and options, for DAGs (docs/batch.md has the whole format):
    job prep -- ./prepare input
    job left after:prep isolate -- ./left > left.out
    job right after:prep isolate priority:5 -- ./right > right.out
    job join after:left,right -- cat left.out right.out > all.out"""


def add_parsers(sub: Any) -> None:
    w = sub.add_parser("worker", help="a placeholder: pull jobs from the scheduler and run them",
                       description="Run a batch worker (placeholder): one persistent 9P "
                       "connection to the scheduler at ADDR, SLOTS jobs at a time, until stopped. "
                       "It rides out a scheduler restart.")
    _at(w)
    w.add_argument("--slots", type=_positive("slots"), default=os.cpu_count() or 1,
                   help="jobs this worker runs at once (default: one per core)")
    w.add_argument("--workdir", metavar="DIR", help="scratch and job output (default: a "
                   "directory of this worker under the state directory)")
    w.add_argument("--name", help="this worker's name (default: HOST-PID-RANDOM)")
    w.add_argument("--domain", default="", metavar="NAME", help="this worker's availability "
                   "domain, e.g. its rack (the node label rack=NAME): the scheduler runs a "
                   "job's redundant copies in different domains, so that one rack's failure "
                   "cannot take every copy")
    w.add_argument("--domain-from", metavar="LABEL", help="take the domain from this label of "
                   "the node the worker was started on (its daemon at $BRASIL_AT): how "
                   "`brasil workers --spread LABEL` starts them")
    w.add_argument("--remote-homes", action="store_true", help="read homes and commit changes "
                   "through the scheduler node's exported fs/ (a worker on another host)")
    w.add_argument("--keep-outputs", type=_positive("--keep-outputs"), default=1000,
                   metavar="N", help="output files kept in the workdir's out/ (the oldest are "
                   "removed first; default 1000); the scheduler keeps the last 4 KiB of each")
    w.add_argument("-q", "--quiet", action="store_true")
    w.add_argument("--trace-jobs", action="store_true", help="log one line per execution with "
                   "the moments it passed (received, spawned, exited, committed…) to stderr")

    ws = sub.add_parser("workers", help="start N workers anywhere in the tree, through a session",
                        description="Reserve N slots anywhere in the tree (res N on a new "
                        "session) and run `brasil worker --slots 1` in each, pointed at the "
                        "scheduler. Prints the session; `brasil write /csrv/local/ID/ctl close` "
                        "stops them.")
    _at(ws)
    ws.add_argument("n", type=_positive("N"), metavar="N")
    ws.add_argument("--scheduler", metavar="ADDR", help="where the workers dial the scheduler "
                    "(default: the first TCP address in the daemon's net file, else --at)")
    ws.add_argument("--spread", metavar="LABEL", help="deal the workers evenly over the values "
                    "of a node label such as rack (res N spread LABEL), each worker's "
                    "availability domain being its node's value: a job's redundant copies then "
                    "run in different racks")

    s = sub.add_parser("submit", help="submit one job, or many from a file, in one step",
                       description="Submit a job (-- CMD…) or a job file (--file FILE, '-' for "
                       "stdin). Prints the job id, or FIRST-LAST for a file. As with `brasil "
                       "run`, one word after -- is a shell command line, taken as it is "
                       "(-- 'make > log 2>&1'); several words are quoted (shlex.join), so each "
                       "stays one word: -- sh -c 'echo one; echo two' runs sh with two "
                       "arguments.",
                       epilog=SUBMIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _at(s)
    s.add_argument("--tag", help="the workload's tag, which wait, jobs, cancel and report "
                   "select by (default: default)")
    s.add_argument("--after", type=_ids, default=[], metavar="ID[,ID…]",
                   help="run after these jobs")
    s.add_argument("--isolate", action="store_true", help="run in a private copy-on-write view "
                   "of the home; commit the changes of the first execution that ends with 0")
    s.add_argument("--redundancy", type=_positive("redundancy"), help="at most this many "
                   "executions of one isolated job at once (default 2; 1 turns redundancy off)")
    s.add_argument("--retries", type=int, help="failed executions allowed before the job fails "
                   "(default 2)")
    s.add_argument("--priority", type=int, help="higher first (default 0)")
    s.add_argument("--timeout", type=int, metavar="S", help="seconds an execution may run; "
                   "one running longer is killed (its whole process group) and counts as a "
                   "failure, 'timed out after S s' (1 to 31536000; default 0: no limit)")
    s.add_argument("--home", metavar="DIR", help="working directory, on the scheduler's node "
                   "(default: this directory)")
    s.add_argument("--env", action="append", default=[], metavar="K=V", help="(repeatable)")
    s.add_argument("--file", metavar="FILE", help="a job file ('-': stdin)")
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD…")

    j = sub.add_parser("jobs", help="list jobs and their states",
                       description="One line per job (id, state, tag, name, exit status, the "
                       "worker it ran on, when it started, how long it ran, command, reason), "
                       "then a summary line. Worker and times are those of its winning "
                       "execution, or else of its latest.")
    _at(j)
    j.add_argument("--tag", help="only the jobs of this workload")
    j.add_argument("--state", action="append", metavar="STATE", help="only the jobs in this "
                   "state (repeatable): waiting, ready, running, exiting, done, failed, cancelled")

    wt = sub.add_parser("wait", help="wait for jobs to end (progress bar on a terminal)",
                        description="Wait until every job of --tag (or the given ids, or every "
                        "job) has ended. Exit status 0 if all are done, 1 if any failed or was "
                        "cancelled.")
    _at(wt)
    wt.add_argument("--tag", help="wait for this workload's jobs only (default: every job)")
    wt.add_argument("ids", nargs="*", type=int, metavar="ID")

    c = sub.add_parser("cancel", help="cancel jobs (their executions are killed)",
                       description="Cancel the given jobs (each must exist and not have ended), "
                       "or every unfinished job of --tag. Their running executions are killed "
                       "and every job that waits for them is cancelled too, naming the "
                       "dependency. A job committing its output (exiting) cannot be cancelled.")
    _at(c)
    c.add_argument("--tag", help="cancel every job of this workload")
    c.add_argument("ids", nargs="*", type=int, metavar="ID")

    rt = sub.add_parser("retry", help="run failed jobs again; their cancelled dependants wait "
                        "again", description="Failed jobs (the given ids, every failed job of "
                        "--tag, or every failed job with --failed) become ready again, and the "
                        "jobs that were cancelled because of them wait again (as HyperQueue's "
                        "resubmit and Makeflow's rerun), so `brasil wait` can succeed. A "
                        "dependant that has another failed dependency stays cancelled.")
    _at(rt)
    rt.add_argument("--tag", help="every failed job of this workload")
    rt.add_argument("--failed", action="store_true", help="every failed job")
    rt.add_argument("--retries", type=int, default=0, metavar="N", help="how many more "
                    "failures each may have before it fails again (default 0)")
    rt.add_argument("ids", nargs="*", type=int, metavar="ID")

    o = sub.add_parser("output", help="print the end of a job's output",
                       description="Print the end (the last 4 KiB) of a job's output (stdout and "
                       "stderr, as one stream): the winning execution's, or for a failed job the "
                       "last execution's. The scheduler keeps it, so it works wherever the worker "
                       "ran, even after the worker is gone; stderr says which execution, its "
                       "worker, and where the whole file is (on the worker's host, while its "
                       "--keep-outputs retention keeps it). Exit status 1 if no execution of the "
                       "job has ended yet.")
    _at(o)
    o.add_argument("id", type=int, metavar="ID")

    r = sub.add_parser("report", help="makespan, overhead breakdown and a Gantt chart",
                       description="The workload's makespan and the Trellis thesis's overhead "
                       "breakdown (tables 5.1-5.3), and with --out a Gantt chart (.png or .html): "
                       "one row per worker slot, redundant and killed executions marked.")
    _at(r)
    r.add_argument("--tag", required=True, help="the workload to report on")
    r.add_argument("--out", metavar="FILE.png|FILE.html")


async def _batch(args: argparse.Namespace) -> Any:
    from ..batch.api import Batch
    return Batch(await connect(args))


def command_line(words: list[str]) -> str:
    """The job's command from submit's words, as `brasil run` makes it: one word is shell text,
    taken as it is (`-- 'make > log'`); several are quoted with shlex.join, so each stays one
    word (`-- sh -c 'echo one; echo two'`, `-- printf '%s\\n' 'a b'`)."""
    return words[0] if len(words) == 1 else shlex.join(words)


async def cmd_submit(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if bool(cmd) == bool(args.file):
        raise UsageError("give a command after --, or --file FILE (not both)")
    env = {}
    for kv in args.env:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise UsageError(f"--env {kv!r}: expected KEY=VALUE")
        env[k] = v
    home = os.path.abspath(args.home or ".")  # noqa: ASYNC240 - a name, no disk
    options = dict(tag=args.tag, home=home, isolate=args.isolate or None,
                   redundancy=args.redundancy, retries=args.retries, priority=args.priority,
                   timeout=args.timeout, after=args.after, env=env)
    b = await _batch(args)
    try:
        r = await _submit(b, args, cmd, options)
    except NinepError as e:  # the scheduler's "submit: …": we are brasil submit already
        raise NinepError(e.message.removeprefix("submit: "), e.errno) from None
    finally:
        await b.close()
    print(r.first if r.first == r.last else f"{r.first}-{r.last}")
    for name, job in sorted(r.names.items(), key=lambda kv: kv[1]):  # which id each name got
        print(f"{job} {name}")
    return 0


async def _submit(b: Any, args: argparse.Namespace, cmd: list[str], options: dict[str, Any]
                  ) -> Any:
    if args.file == "-":
        def stdin() -> Any:
            while chunk := sys.stdin.buffer.read(1 << 20):
                yield chunk
        return await b.submit_stream(stdin(), filename="<stdin>", **options)
    if args.file:
        if not os.path.isfile(args.file):  # noqa: ASYNC240 - one local stat first
            raise UsageError(f"--file {args.file}: no such file")
        return await b.submit_file(args.file, **options)
    line = command_line(cmd)
    if "\n" in line:
        raise UsageError("a job's command is one line: write a script for a command of several "
                         "lines, or use --file")
    return await b.submit([line], filename="<command>", **options)


async def cmd_jobs(args: argparse.Namespace) -> int:
    b = await _batch(args)
    try:
        jobs = await b.jobs(args.tag)
        summary = await b.summary(args.tag)
    finally:
        await b.close()
    if args.state:
        from ..batch.lifecycle import JOB_STATES
        unknown = [st for st in args.state if st not in JOB_STATES]
        if unknown:
            raise UsageError(f"--state {unknown[0]}: a job is one of {', '.join(JOB_STATES)}")
        jobs = [j for j in jobs if j.state in args.state]
    for j in jobs:
        extra = f"  ({j.reason})" if j.reason else ""
        print(f"{j.id:>7} {j.state:<9} {j.tag:<12} {j.name or '-':<12} "
              f"{'-' if j.exit_status is None else j.exit_status:>4} {j.worker or '-':<14} "
              f"{_clock(j.started):>8} {_took(j):>8}  {j.cmd}{extra}")
    print(" ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def _clock(t: float | None) -> str:
    """A start time as the local HH:MM:SS ('-': not started)."""
    import time
    return "-" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


def _took(j: Any) -> str:
    """How long the job's execution ran (or has run so far, '…' after it); '-': not started."""
    import time
    if j.started is None:
        return "-"
    d = (j.ended if j.ended is not None else time.time()) - j.started
    text = f"{d:.1f}s" if d < 60 else f"{d / 60:.1f}m" if d < 3600 else f"{d / 3600:.1f}h"
    return text if j.ended is not None else text + "…"


async def cmd_wait(args: argparse.Namespace) -> int:
    if args.tag and args.ids:
        raise UsageError("give --tag T or job ids, not both")
    b = await _batch(args)
    try:
        if args.tag:
            await _tag_exists(b, args.tag)
        for i in args.ids:
            await b.job(i)  # a clear error for an id that does not exist
        watch = asyncio.ensure_future(_no_worker_note(b))
        try:
            if sys.stderr.isatty() and not args.ids:
                summary = await _progress(b, args.tag)
            else:
                summary = await b.wait(args.tag, args.ids)
        finally:
            watch.cancel()
    finally:
        await b.close()
    bad = summary.get("failed", 0) + summary.get("cancelled", 0)
    print(" ".join(f"{k} {v}" for k, v in summary.items() if v or k == "total"))
    return 1 if bad else 0


async def _no_worker_note(b: Any, grace: float = 2.0) -> None:
    """wait blocks while no worker is connected: say so once, rather than wait in silence."""
    await asyncio.sleep(grace)
    words = (await b.state()).split()
    if "workers" in words and words[words.index("workers") + 1:][:1] == ["0"]:
        print("brasil wait: no worker is connected to the scheduler, so nothing runs: start "
              "some with `brasil worker` or `brasil workers N` (still waiting)", file=sys.stderr,
              flush=True)


async def _progress(b: Any, tag: str | None) -> dict[str, int]:
    """A rich progress bar: done, running, failed, and the ETA, until every job has ended."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..batch.queries import TERMINAL
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("running {task.fields[running]} failed {task.fields[failed]}"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task(tag or "all jobs", total=None, running=0, failed=0)
        while True:
            s = await b.summary(tag)
            ended = sum(s.get(k, 0) for k in TERMINAL)
            bar.update(task, total=s.get("total", 0), completed=ended,
                       running=s.get("running", 0) + s.get("exiting", 0),
                       failed=s.get("failed", 0) + s.get("cancelled", 0))
            if ended >= s.get("total", 0):
                return s
            await asyncio.sleep(0.25)


async def _tag_exists(b: Any, tag: str) -> None:
    if not (await b.summary(tag)).get("total"):
        raise UsageError(f"no jobs tagged {tag!r} (brasil jobs lists the tags)")


async def cmd_cancel(args: argparse.Namespace) -> int:
    if bool(args.tag) == bool(args.ids):
        raise UsageError("give --tag T or job ids (one of them)")
    b = await _batch(args)
    try:
        if args.tag:
            await _tag_exists(b, args.tag)
        await b.cancel(args.ids, args.tag)
    finally:
        await b.close()
    return 0


async def cmd_retry(args: argparse.Namespace) -> int:
    if sum((bool(args.tag), bool(args.ids), args.failed)) != 1:
        raise UsageError("give --tag T, --failed or job ids (one of them)")
    b = await _batch(args)
    try:
        if args.tag:
            await _tag_exists(b, args.tag)
        n = len(args.ids) if args.ids else (await b.summary(args.tag)).get("failed", 0)
        await b.retry(args.ids, args.tag, every_failed=args.failed, retries=args.retries)
    finally:
        await b.close()
    print(f"retrying {n} failed job(s); the jobs cancelled because of them wait again"
          if n else "no failed job to retry", file=sys.stderr)
    return 0


async def cmd_output(args: argparse.Namespace) -> int:
    b = await _batch(args)
    try:
        out = await b.output(args.id)
    finally:
        await b.close()
    if out.execution is None:
        print(f"brasil output: job {args.id} is {out.state}: no execution of it has ended yet, "
              "so it has no output (brasil wait waits for it)", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(out.tail)
    sys.stdout.flush()
    whose = "winning" if out.state in ("done", "exiting") else "last"
    kept = ("no output" if not out.size else f"all {out.size} bytes" if len(out.tail) == out.size
            else f"the last {len(out.tail)} of {out.size} bytes")
    print(f"brasil output: job {args.id} ({out.state}): {kept} of its {whose} execution, "
          f"{out.execution} (exit status {out.status}), on worker {out.worker}"
          + (f"; the whole file: {out.place}" if out.size else ""), file=sys.stderr)
    return 0


async def cmd_report(args: argparse.Namespace) -> int:
    from ..batch import report
    if args.out and not args.out.endswith((".png", ".html")):
        raise UsageError(f"--out {args.out}: give a .png or .html file name")
    b = await _batch(args)
    try:
        jobs = await b.jobs(args.tag)
        events = await b.events(args.tag)
    finally:
        await b.close()
    if not jobs:
        raise UsageError(f"no jobs tagged {args.tag!r} (brasil jobs lists the tags)")
    rep = report.build(args.tag, jobs, events)
    print(report.text(rep), end="")
    if args.out:
        await asyncio.get_running_loop().run_in_executor(None, report.write, rep, args.out)
        print(f"Gantt chart: {os.path.abspath(args.out)}")  # noqa: ASYNC240 - a name, no disk
    return 0


async def cmd_workers(args: argparse.Namespace) -> int:
    from ..client.session import SessionClient
    c = await connect(args)
    try:
        target = args.scheduler
        if not target:
            net = (await c.read("csrv/local/net")).decode().split()
            tcp = [net[i + 1] for i in range(0, len(net) - 1, 2) if net[i] == "9p"
                   and not net[i + 1].startswith("unix:")]
            target = tcp[0] if tcp else (args.at or os.environ.get("BRASIL"))
        if not target:
            raise UsageError("cannot tell where the workers should dial: give --scheduler ADDR")
        session = await SessionClient.clone(c)
        await session.ctl(f"res {args.n}" + (f" spread {args.spread}" if args.spread else ""))
        secret = args.secret_file or os.environ.get("BRASIL_SECRET_FILE")
        if secret:
            path = os.path.abspath(secret)  # noqa: ASYNC240 - a name, no disk
            await session.ctl(f"env BRASIL_SECRET_FILE={path}")
        domain = ["--domain-from", args.spread] if args.spread else []
        cmd = shlex.join(python_argv("brasil.cli.main", "worker", "--at", target, "--slots",
                                     "1", "-q", *domain))
        await session.exec(cmd)
    finally:
        await c.close()
    print(f"/{session.path}: {args.n} workers for the scheduler at {target}; stop them with: "
          f"brasil write /{session.file('ctl')} close")
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    from ..batch.worker import Worker, default_name
    from ..ninep.private import private_dir
    from .serve import state_dir
    name = args.name or default_name()
    # started through a daemon (brasil workers): beside its state, under the cluster's --dir
    base = os.environ.get("BRASIL_STATE_DIR") or state_dir(None)
    workdir = args.workdir or os.path.join(base, "workers", name)
    private_dir(workdir, "worker directory")
    domain = await _node_label(args.domain_from) if args.domain_from else args.domain
    worker = Worker(lambda: connect(args), args.slots, workdir, name=name,
                    remote_homes=args.remote_homes or None, keep_outputs=args.keep_outputs,
                    domain=domain)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    logging.getLogger("brasil").info("worker %s: %d slot(s), scheduler %s", worker.name,
                                     args.slots, args.at or os.environ.get("BRASIL", "local"))
    await worker.run()
    return 0


async def _node_label(label: str) -> str:
    """The value of ``label`` on the node whose daemon started us (``$BRASIL_AT``, its Unix
    socket, where no secret is needed)."""
    from ..ninep.client import Client
    at = os.environ.get("BRASIL_AT")
    if not at:
        raise UsageError(f"--domain-from {label}: not started by a daemon ($BRASIL_AT is not "
                         "set); give the domain with --domain NAME")
    c = await Client.connect(at)
    try:
        text = (await c.read("csrv/local/attrs")).decode()
    finally:
        await c.close()
    labels = dict(ln.partition("=")[::2] for ln in text.splitlines() if "=" in ln)
    if not labels.get(label):
        raise UsageError(f"--domain-from {label}: this node has no label {label!r} (its "
                         f"attributes: {', '.join(sorted(labels)) or 'none'}); label it with "
                         f"serve --label {label}=VALUE")
    return labels[label]


COMMANDS = {"worker": cmd_worker, "workers": cmd_workers, "submit": cmd_submit, "jobs": cmd_jobs,
            "wait": cmd_wait, "cancel": cmd_cancel, "retry": cmd_retry, "report": cmd_report,
            "output": cmd_output}


def main(args: argparse.Namespace) -> int:
    from .errors import run
    if args.command == "worker":
        daemon_logging(args.quiet)
        if args.trace_jobs:
            logging.getLogger("brasil.batch.worker.trace").setLevel(logging.DEBUG)
    elif getattr(args, "trace", False):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(f"brasil {args.command}", lambda: COMMANDS[args.command](args))


__all__ = ["add_parsers", "main", "NinepError"]
