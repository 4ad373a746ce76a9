"""The Python API of the batch layer: what `brasil submit/jobs/wait/cancel/report` are made of.

::

    from brasil.batch.api import Batch
    async with await Batch.connect("unix:/run/brasil.sock") as b:
        ids = await b.submit(["make -C a", "make -C b"], tag="build", home="/src")
        await b.submit_file("dag.jobs", tag="dag", isolate=True)
        summary = await b.wait(tag="build")        # {'done': 2, 'failed': 0, …}
        for job in await b.jobs(tag="build"):
            print(job.id, job.state, job.reason)

A submission streams the job file to ``batch/submit`` in writes as large as the connection
allows (1 MiB), then reads the ids once: 100,000 jobs are a few dozen round trips.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TypedDict, Unpack

from ..ninep.auth import client_auth, load_secret, secret_file_for
from ..ninep.client import Client
from ..ninep.constants import ORDWR
from ..ninep.transport import default_address, parse_address
from .queries import all_ended, parse_summary

B = "csrv/local/batch"


@dataclass(frozen=True)
class Job:
    id: int
    state: str
    tag: str
    name: str | None
    exit_status: int | None
    cmd: str
    reason: str
    worker: str | None = None     # of its winning execution, or else its latest
    started: float | None = None  # that execution's start and end (seconds since the epoch)
    ended: float | None = None


@dataclass(frozen=True)
class Event:
    t: float
    kind: str
    job: int | None
    execution: int | None
    worker: str | None
    detail: str


@dataclass(frozen=True)
class Output:
    """The end of a job's output, as the scheduler keeps it (``job/ID/output``). ``execution``
    is None while none has ended; ``place`` is ``HOST:PATH`` of the whole file on its worker."""
    job: int
    state: str
    execution: int | None
    worker: str = ""
    status: int | None = None
    size: int = 0
    tail: bytes = b""
    place: str = ""


def parse_output(data: bytes) -> Output:
    head, _, tail = data.partition(b"\n")
    w = head.decode().split(" ")
    if w[4] == "-":
        return Output(int(w[1]), w[2], None)
    f = dict(zip(w[3:13:2], w[4:14:2]))
    return Output(int(w[1]), w[2], int(f["execution"]), f["worker"], int(f["status"]),
                  int(f["size"]), tail, head.decode().partition(" place ")[2])


@dataclass(frozen=True)
class Submitted:
    first: int
    last: int
    names: dict[str, int]

    @property
    def ids(self) -> range:
        return range(self.first, self.last + 1)


def parse_job(line: str) -> Job:
    f = line.split("\t")
    opt = (lambda i: None if len(f) <= i or f[i] == "-" else f[i])  # noqa: E731
    when = (lambda i: None if opt(i) is None else float(f[i]))  # noqa: E731
    return Job(int(f[0]), f[1], f[2], None if f[3] == "-" else f[3],
               None if f[4] == "-" else int(f[4]), f[5], f[6] if len(f) > 6 else "",
               opt(7), when(8), when(9))


def parse_event(line: str) -> Event:
    f = line.split(" ", 5)
    opt = lambda x: None if x == "-" else x  # noqa: E731
    return Event(float(f[0]), f[1], None if f[2] == "-" else int(f[2]),
                 None if f[3] == "-" else int(f[3]), opt(f[4]), f[5] if len(f) > 5 else "")


class Options(TypedDict, total=False):
    """The submission-wide options, as :func:`header` takes them."""

    tag: str | None
    home: str | None
    isolate: bool | None
    redundancy: int | None
    retries: int | None
    priority: int | None
    timeout: int | None
    after: Iterable[int]
    env: dict[str, str] | None
    filename: str | None


def header(*, tag: str | None = None, home: str | None = None, isolate: bool | None = None,
           redundancy: int | None = None, retries: int | None = None,
           priority: int | None = None, timeout: int | None = None, after: Iterable[int] = (),
           env: dict[str, str] | None = None, filename: str | None = None) -> str:
    """The ``%set`` lines that carry submission-wide options ahead of the jobs."""
    lines = []
    for key, value in (("tag", tag), ("home", home), ("redundancy", redundancy),
                       ("retries", retries), ("priority", priority), ("timeout", timeout)):
        if value is not None:
            lines.append(f"%set {key} {value}")
    if isolate is not None:
        lines.append(f"%set isolate {'on' if isolate else 'off'}")
    after = list(after)
    if after:
        lines.append(f"%set after {','.join(map(str, after))}")
    for k, v in (env or {}).items():
        lines.append(f"%set env {k}={v}")
    lines.append(f"%file {filename or '<submit>'}")  # line numbers count from the jobs
    return "".join(line + "\n" for line in lines)


class Batch:
    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    async def connect(cls, address: str | None = None, secret_file: str | None = None) -> Batch:
        addr = parse_address(address) if address else default_address()
        secret_file = secret_file_for(addr, secret_file)
        auth = client_auth(load_secret(secret_file)) if secret_file else None
        return cls(await Client.connect(addr, auth=auth))

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- submitting ----

    async def submit_stream(self, chunks: AsyncIterator[bytes] | Iterable[bytes], **options: Unpack[Options]
                            ) -> Submitted:
        """Jobs in the job-file format (jobfile.py), as chunks of bytes; options as header()."""
        f = await self.client.open(f"{B}/submit", ORDWR)
        async with f:
            buf = bytearray(header(**options).encode())
            limit = f.iounit

            async def flush(final: bool = False) -> None:
                while len(buf) >= limit or (final and buf):
                    n = await f.write(bytes(buf[:limit]))
                    del buf[:n]
            if hasattr(chunks, "__aiter__"):
                async for c in chunks:
                    buf += c
                    await flush()
            else:
                for c in chunks:
                    buf += c
                    await flush()
            await flush(final=True)
            answer = (await f.read(1 << 20, 0)).decode().splitlines()
        first, last = map(int, answer[0].split())
        names = {n: int(i) for n, i in (ln.split() for ln in answer[1:])}
        return Submitted(first, last, names)

    async def submit(self, commands: Iterable[str] | str, **options: Unpack[Options]) -> Submitted:
        """One job per command (each a line for /bin/sh); ``options`` as :func:`header`."""
        if isinstance(commands, str):
            commands = [commands]
        lines = []
        for c in commands:
            if "\n" in c:
                raise ValueError(f"a job's command is one line: {c[:60]!r}")
            if "\0" in c:
                raise ValueError(f"a job's command cannot hold a NUL byte (\\0): {c[:60]!r}")
            lines.append((c + "\n").encode())
        return await self.submit_stream(lines, **options)

    async def submit_file(self, path: str, **options: Unpack[Options]) -> Submitted:
        options.setdefault("filename", os.path.basename(path))

        def chunks() -> Iterable[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
        return await self.submit_stream(chunks(), **options)

    # ---- looking ----

    async def jobs(self, tag: str | None = None) -> list[Job]:
        text = (await self.client.read(self._scope(tag, "jobs"))).decode()
        return [parse_job(ln) for ln in text.splitlines() if not ln.startswith("summary ")]

    async def job(self, job_id: int) -> Job:
        text = (await self.client.read(f"{B}/job/{job_id}/status")).decode()
        if not text.strip():
            from ..ninep.errors import NinepError
            raise NinepError(f"there is no job {job_id} (brasil jobs lists them)")
        return parse_job(text.splitlines()[0])

    async def output(self, job_id: int) -> Output:
        """The end of the job's output: the winning execution's, or the last that ended."""
        return parse_output(await self.client.read(f"{B}/job/{job_id}/output"))

    async def summary(self, tag: str | None = None) -> dict[str, int]:
        return parse_summary((await self.client.read(self._scope(tag, "summary"))).decode())

    async def events(self, tag: str | None = None) -> list[Event]:
        text = (await self.client.read(self._scope(tag, "events"))).decode()
        return [parse_event(ln) for ln in text.splitlines() if ln]

    async def wait(self, tag: str | None = None, ids: Iterable[int] = ()) -> dict[str, int]:
        """Block until every job of ``tag`` (or each of ``ids``, or every job) has ended;
        returns the summary (of the tag, or summed over the ids)."""
        ids = list(ids)
        if not ids:
            return parse_summary((await self.client.read(self._scope(tag, "wait"))).decode())
        total: dict[str, int] = {}
        for i in ids:
            s = parse_summary((await self.client.read(f"{B}/job/{i}/wait")).decode())
            for k, v in s.items():
                total[k] = total.get(k, 0) + v
        return total

    async def cancel(self, ids: Iterable[int] = (), tag: str | None = None) -> None:
        ids = list(ids)
        cmd = f"cancel tag {tag}" if tag else "cancel " + " ".join(map(str, ids))
        await self.client.write(f"{B}/ctl", cmd + "\n")

    async def retry(self, ids: Iterable[int] = (), tag: str | None = None, *,
                    every_failed: bool = False, retries: int = 0) -> None:
        """Failed jobs run again; the jobs cancelled because of them wait again."""
        what = "failed" if every_failed else f"tag {tag}" if tag else " ".join(map(str, ids))
        await self.client.write(f"{B}/ctl", f"retry retries={retries} {what}\n")

    async def state(self) -> str:
        return (await self.client.read(f"{B}/ctl")).decode().strip()

    @staticmethod
    def _scope(tag: str | None, name: str) -> str:
        return f"{B}/tags/{tag}/{name}" if tag else f"{B}/{name}"


__all__ = ["Batch", "Job", "Event", "Output", "Submitted", "header", "all_ended"]
