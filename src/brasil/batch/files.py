"""``/csrv/local/batch``: the scheduler as files (docs/batch.md and docs/reference.md, "Batch").

::

    batch/
      ctl            w  worker NAME SLOTS [remote] [host=H] [pid=P] · cancel ID… · cancel tag T ·
                        retry [retries=N] ID…|tag T|failed ·
                        lease SECONDS;   r: one line of state
      submit         rw write job lines (jobfile.py), in as many writes as needed; then read: the
                        ids ("FIRST LAST", then "NAME ID" for named jobs), or the error
      jobs           r  one line per job (tab-separated: ID STATE TAG NAME EXIT CMD REASON WORKER
                        STARTED ENDED), then a summary line
      summary        r  "summary total N waiting N ready N running N exiting N done N failed N
                        cancelled N"
      events         r  every event: "TIME KIND JOB EXECUTION WORKER DETAIL"
      wait           r  blocks until every job has ended; then the summary
      tags/T/        jobs, summary, events, wait: the same, for the jobs tagged T
      job/ID/        status (its jobs line), wait (blocks until it has ended), output (a header
                        line, then the end of its output: see queries.output)
      workers/NAME/  ctl (w: the worker's reports), next (r: blocks until there is work or news)

A worker's ``next`` read returns every line queued for it at once; its ``ctl`` write may carry
any number of reports: one round trip moves many jobs.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
from typing import Any, NoReturn

from ..ninep.ctl import CommandTable, CtlFile
from ..ninep.errors import Enotfound, NinepError
from ..ninep.server import loop_time
from ..ninep.synthetic import (
    BytesHandle,
    Dir,
    DynamicDir,
    Entry,
    GeneratedFile,
    Handle,
    Inode,
    TableDir,
)
from . import queries
from .jobfile import MAX_ID, TAG_RE, JobFileError, Parser, job_id
from .scheduler import Scheduler


class BatchCtl(CtlFile):
    commands = CommandTable()

    def __init__(self, sched: Scheduler, workers: DynamicDir) -> None:
        super().__init__()
        self.sched = sched
        self.workers = workers  # batch/workers/, where a worker that registers gets its files

    def state(self) -> str:
        return self.sched.state_line()

    @commands.command("worker NAME SLOTS [remote] [host=H] [pid=P] [domain=D]", args=(2, 6))
    def _worker(self, args: list[str]) -> None:
        name = args[0]
        if not TAG_RE.fullmatch(name):
            raise NinepError(f"worker: name {name!r}: use letters, digits, '.', '_' or '-'",
                             errno.EINVAL)
        try:
            slots = int(args[1])
            if slots < 0:
                raise ValueError
        except ValueError:
            raise NinepError(f"worker: SLOTS must be a number ≥ 0, not {args[1]!r}",
                             errno.EINVAL) from None
        opts = dict(a.split("=", 1) for a in args[2:] if "=" in a)
        pid = opts.get("pid", "0") or "0"
        if not pid.isdigit() or len(pid) > 10 or slots > 1 << 20:
            raise NinepError(f"worker: SLOTS up to {1 << 20} and pid=P a process id, not "
                             f"{' '.join(args[1:])[:60]!r}", errno.EINVAL)
        domain = opts.get("domain", "")
        if domain and not TAG_RE.fullmatch(domain):
            raise NinepError(f"worker: domain {domain[:60]!r}: use letters, digits, '.', '_' "
                             "or '-'", errno.EINVAL)
        self.sched.register(name, slots, opts.get("host", "?")[:256], int(pid),
                            "remote" in args[2:], domain)
        try:
            self.workers.walk(name)  # registered before: its files are there
        except NinepError:
            self.workers.add(name, WorkerDir(self.sched, name))

    @commands.command("cancel ID…|tag T", args=(1, None))
    def _cancel(self, args: list[str]) -> Any:
        if args[0] == "tag":
            if len(args) != 2:
                raise NinepError('cancel tag T: give exactly one tag', errno.EINVAL)
            return self.sched.cancel(None, args[1])
        ids = [i for i in map(job_id, args) if i is not None]
        if len(ids) < len(args):
            raise NinepError(f"cancel: job ids are numbers from 1 to {MAX_ID}, not "
                             f"{' '.join(args)[:60]!r}; usage: cancel ID… or cancel tag T",
                             errno.EINVAL)
        return self.sched.cancel(ids, None)

    @commands.command("retry [retries=N] ID…|tag T|failed", args=(1, None))
    def _retry(self, args: list[str]) -> Any:
        """Failed jobs run again (with N more failures allowed, default 0), and the jobs
        cancelled because of them wait again."""
        usage = "usage: retry [retries=N] ID… | retry [retries=N] tag T | retry failed"
        retries = 0
        if args[0].startswith("retries="):
            value = args.pop(0).partition("=")[2]
            if not value.isdigit() or int(value) > 1000:
                raise NinepError(f"retry: retries=N with N from 0 to 1000, not {value[:20]!r}",
                                 errno.EINVAL)
            retries = int(value)
        if args == ["failed"]:
            return self.sched.retry(None, None, retries)
        if args[:1] == ["tag"]:
            if len(args) != 2:
                raise NinepError(f"retry tag T: give exactly one tag; {usage}", errno.EINVAL)
            return self.sched.retry(None, args[1], retries)
        ids = [i for i in map(job_id, args) if i is not None]
        if not ids or len(ids) < len(args):
            raise NinepError(f"retry: job ids are numbers from 1 to {MAX_ID}, not "
                             f"{' '.join(args)[:60]!r}; {usage}", errno.EINVAL)
        return self.sched.retry(ids, None, retries)

    @commands.command("lease SECONDS")
    def _lease(self, args: list[str]) -> None:
        try:
            lease = float(args[0])
            if not 0.2 <= lease <= 86400:
                raise ValueError
        except ValueError:
            raise NinepError(f"lease: SECONDS between 0.2 and 86400, not {args[0]!r}",
                             errno.EINVAL) from None
        self.sched.lease = lease


class SubmitFile(Inode):
    def __init__(self, sched: Scheduler) -> None:
        super().__init__()
        self.sched = sched

    def open(self, mode: int) -> Handle:
        return SubmitHandle(self, self.sched)


class SubmitHandle(Handle):
    """Writes are job lines, parsed as they arrive; the first read submits them all at once.

    The parse, the checks and the insert run off the event loop (a thread, then the database's
    thread), one write after another (``lock``): a submission of 100,000 jobs takes seconds of
    work, during which the daemon's other clients are served as usual. Its size is capped
    (``Scheduler.max_submit`` jobs; see ``Parser``)."""

    def __init__(self, node: Inode, sched: Scheduler) -> None:
        super().__init__(node)
        self.sched = sched
        self.parser: Parser | None = sched.parser()
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.answer: bytes | None = None
        self.error: NinepError | None = None
        self.lock = asyncio.Lock()

    def write(self, offset: int, data: bytes) -> Any:
        if self.error is not None:
            raise self.error
        if self.answer is not None:
            raise NinepError("submit: these jobs are submitted already; open submit again for more")
        return self._write(data)

    async def _write(self, data: bytes) -> int:
        async with self.lock:
            if self.error is not None:
                raise self.error
            try:
                await asyncio.to_thread(self._feed, data)
            except UnicodeDecodeError:
                self._fail(NinepError("submit: job files must be UTF-8 text", errno.EINVAL))
            except JobFileError as e:
                self._fail(NinepError(f"submit: {e}", errno.EINVAL))
        return len(data)

    def _feed(self, data: bytes) -> None:
        if self.parser is None:
            raise NinepError("submit: these jobs are submitted already; open submit again for more")
        self.parser.feed(self.decoder.decode(data))

    def _fail(self, error: NinepError) -> NoReturn:
        """Keep ``error`` for every later write and read, and drop what was parsed."""
        self.error, self.parser = error, None
        raise error

    def read(self, offset: int, count: int) -> Any:
        if self.error is not None:
            raise self.error
        if self.answer is not None:
            return self.answer[offset:offset + count]
        return self._submit(offset, count)

    async def _submit(self, offset: int, count: int) -> bytes:
        async with self.lock:
            if self.error is not None:
                raise self.error
            if self.answer is None:
                try:
                    assert self.parser is not None
                    specs = await asyncio.to_thread(self.parser.finish)
                    first, n = await self.sched.submit(specs)
                except JobFileError as e:
                    self._fail(NinepError(f"submit: {e}", errno.EINVAL))
                except NinepError as e:
                    self._fail(NinepError(f"submit: {e.message}", errno.EINVAL))
                self.parser = None  # the jobs are in the database: free them now
                self.answer = await asyncio.to_thread(_answer, specs, first, n)
        return self.answer[offset:offset + count]


def _answer(specs: list[Any], first: int, n: int) -> bytes:
    """What a submission's read returns: "FIRST LAST", then "NAME ID" for each named job."""
    lines = [f"{first} {first + n - 1}"]
    lines += [f"{s.name} {first + i}" for i, s in enumerate(specs) if s.name]
    return ("\n".join(lines) + "\n").encode()


class BatchWaitFile(Inode):
    """Reading blocks until every job in scope has ended; then gives the summary."""

    def __init__(self, sched: Scheduler, tag: str | None = None, job: int | None = None) -> None:
        super().__init__()
        self.sched, self.tag, self.job = sched, tag, job

    def open(self, mode: int) -> Any:
        return self._open()

    async def _open(self) -> Handle:
        while True:
            changed = self.sched.changed
            text = await self.sched.store.read(
                lambda tx: queries.summary(tx, self.tag, self.job))
            if " total 0 " in text and self.job is not None:
                raise NinepError(f"there is no job {self.job}", errno.ENOENT)
            if queries.all_ended(text):
                return BytesHandle(self, text.encode())
            try:
                await asyncio.wait_for(changed.wait(), 5)
            except TimeoutError:
                pass
            await asyncio.sleep(0.05)  # many changes, one look


def _generated(sched: Scheduler, query: Any) -> GeneratedFile:
    async def gen() -> str:
        return await sched.store.read(query)
    return GeneratedFile(gen)


def scope(sched: Scheduler, tag: str | None) -> list[Entry]:
    return [
        Entry("jobs", 0o444, lambda _: _generated(sched, lambda tx: queries.job_lines(tx, tag))),
        Entry("summary", 0o444, lambda _: _generated(sched, lambda tx: queries.summary(tx, tag))),
        Entry("events", 0o444, lambda _: _generated(sched, lambda tx: queries.events(tx, tag))),
        Entry("wait", 0o444, lambda _: BatchWaitFile(sched, tag)),
    ]


class TagsDir(Dir):
    """``tags/T``: any tag name walks (a tag with no jobs yet has an empty list)."""

    def __init__(self, sched: Scheduler) -> None:
        super().__init__()
        self.sched = sched
        self._made: dict[str, Inode] = {}

    def children(self) -> list[Inode]:
        return list(self._made.values())

    def walk(self, name: str) -> Inode:
        if not TAG_RE.fullmatch(name):
            raise NinepError(*Enotfound)
        if name not in self._made:
            if len(self._made) > 1000:
                self._made.clear()
            d = TableDir(scope(self.sched, name), name=name)
            self._made[name] = self.adopt(d)
        return self._made[name]


class JobsByIdDir(Dir):
    """``job/ID``: status and wait for one job."""

    def __init__(self, sched: Scheduler) -> None:
        super().__init__()
        self.sched = sched

    def walk(self, name: str) -> Inode:
        job = job_id(name)
        if job is None:  # not a number, or past any id (it would overflow the database's)
            raise NinepError(*Enotfound)
        d = TableDir([
            Entry("status", 0o444, lambda _: _generated(
                self.sched, lambda tx: queries.job_lines(tx, None, job, summary=False))),
            Entry("wait", 0o444, lambda _: BatchWaitFile(self.sched, None, job)),
            Entry("output", 0o444, lambda _: GeneratedFile(lambda: self._output(job))),
        ], name=name)
        return self.adopt(d)

    async def _output(self, job: int) -> bytes:
        text = await self.sched.store.read(lambda tx: queries.output(tx, job))
        if text is None:
            raise NinepError(f"there is no job {job} (brasil jobs lists them)", errno.ENOENT)
        return text


class WorkerCtl(Inode):
    def __init__(self, sched: Scheduler, name: str) -> None:
        super().__init__()
        self.sched, self.worker = sched, name

    def open(self, mode: int) -> Handle:
        return WorkerCtlHandle(self)


class WorkerCtlHandle(Handle):
    node: WorkerCtl

    def write(self, offset: int, data: bytes) -> Any:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise NinepError("worker reports must be UTF-8 text", errno.EINVAL) from None
        return self._report(text, len(data))

    async def _report(self, text: str, n: int) -> int:
        await self.node.sched.report(self.node.worker, text)
        return n


class WorkerNext(Inode):
    def __init__(self, sched: Scheduler, name: str) -> None:
        super().__init__()
        self.sched, self.worker = sched, name

    def open(self, mode: int) -> Handle:
        return WorkerNextHandle(self)


class WorkerNextHandle(Handle):
    """The worker's open of ``next``: while it lasts the worker is connected; when it ends (its
    connection closed) the scheduler treats the worker as gone at once."""
    node: WorkerNext

    def __init__(self, node: Inode) -> None:
        super().__init__(node)
        self.node.sched.attach(self.node.worker, self)

    def read(self, offset: int, count: int) -> Any:
        return self.node.sched.take(self.node.worker, count)

    def clunk(self) -> None:
        self.node.sched.detach(self.node.worker, self)


class WorkerDir(TableDir):
    def __init__(self, sched: Scheduler, name: str) -> None:
        super().__init__([
            Entry("ctl", 0o200, lambda _: WorkerCtl(sched, name)),
            Entry("next", 0o400, lambda _: WorkerNext(sched, name)),
            Entry("status", 0o444, lambda _: GeneratedFile(lambda: worker_line(sched, name))),
        ])


def worker_line(sched: Scheduler, name: str) -> str:
    w = sched.workers.get(name)
    if w is None:
        return ""
    held = sum(1 for t, o in sched.owner.items() if o == name)
    gone = "" if w.gone_since is None else \
        f" gone {loop_time() - w.gone_since:.1f}s"  # disconnected: no work for it
    return (f"{w.name} {w.host} slots {w.slots} running {held} "
            f"{'remote' if w.remote else 'local'} seen {loop_time() - w.last_seen:.1f}s"
            f"{f' domain {w.domain}' if w.domain else ''}{gone}\n")


def workers_text(sched: Scheduler) -> str:
    return "".join(worker_line(sched, n) for n in sorted(sched.workers))


def batch_dir(sched: Scheduler) -> DynamicDir:
    """The directory `brasil serve` adds as /csrv/local/batch."""
    workers = DynamicDir()
    sched.on_forget.append(workers.discard)  # a dropped worker's directory goes with it
    return DynamicDir([
        Entry("ctl", 0o600, lambda _: BatchCtl(sched, workers)),
        Entry("submit", 0o600, lambda _: SubmitFile(sched)),
        *scope(sched, None),
        Entry("tags", 0o555, lambda _: TagsDir(sched)),
        Entry("job", 0o555, lambda _: JobsByIdDir(sched)),
        Entry("workers", 0o555, lambda _: workers),
        Entry("workerlist", 0o444, lambda _: GeneratedFile(lambda: workers_text(sched))),
    ], name="batch")
