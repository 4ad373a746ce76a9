"""Job files: what `brasil submit --file` sends and the scheduler's ``submit`` file parses.

One job per line, so that 100,000 jobs stream to the scheduler in a few large writes and are
parsed as they arrive. Three kinds of line (blank lines and ``#`` comments are skipped)::

    CMD…                                       a job: the line is its command (run by /bin/sh)
    job NAME [after:A,B] [OPTION…] -- CMD…     a named job, with dependencies and options
    %set KEY VALUE                             defaults for the jobs below (the CLI's options)

``after:`` names jobs of the same submission (before or after the line) or, as numbers, jobs
already submitted. Options: ``tag:T``, ``priority:P`` (-2147483648 to 2147483647, higher runs
first), ``retries:N`` (0 to 1000), ``redundancy:N`` (1 to 100), ``timeout:S`` (seconds an
execution may run before it is killed and counts as failed; 1 to 31536000, 0: no limit),
``isolate`` / ``shared``, ``home:DIR``, ``env:K=V`` (repeatable). ``%set`` keys are the same
(``%set isolate on``, ``%set env K=V``, ``%set after 12,13``); ``%file NAME`` names the file in
error messages and restarts line numbers, so an error points at the user's line, not ours.
A cycle is refused with its members named.

Sizes. A worker reads its assignments in one 9P read of at most 1 MiB, and an assignment is one
line (the job's command, home and environment, JSON-encoded), so a job must fit: a command of at
most ``MAX_CMD`` bytes (256 KiB), an environment of at most ``MAX_ENV`` bytes (256 KiB, its
``K=V`` pairs counted), and the whole encoded record at most ``MAX_RECORD`` bytes (768 KiB).
Anything larger is refused at submission, naming the line: put a long command in a script.
A NUL byte is refused on any line: no command, path or environment can carry one. A submission
is bounded too (see :class:`Parser`): so many jobs (the scheduler's ``max_submit``) and
``MAX_SUBMIT_BYTES`` of assignments.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Iterator

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
TAG_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_CMD = 256 << 10     # bytes of a job's command (UTF-8)
MAX_ENV = 256 << 10     # bytes of a job's environment: the sum of len(K=V) over its pairs
MAX_RECORD = 768 << 10  # bytes of the whole assignment a worker reads (JSON), under its 1 MiB read
MAX_ID = (1 << 63) - 1  # the largest job or execution id (a BIGINT)
MAX_TIMEOUT = 365 * 86400  # seconds: a year
RANGES = {"priority": (-(1 << 31), (1 << 31) - 1), "retries": (0, 1000), "redundancy": (1, 100),
          "timeout": (0, MAX_TIMEOUT)}
KEYS = ("tag", "priority", "retries", "redundancy", "timeout", "isolate", "home", "env", "after")


class JobFileError(ValueError):
    """A job file is wrong; the message names the file and line and says what is expected."""


@dataclasses.dataclass(kw_only=True)
class Options:
    """What ``%set`` changes for the lines below it, and a job line's KEY:VALUE for itself.

    ``env`` is shared, not copied, between the defaults and every job made while it was in force
    (100,000 jobs, one environment); ``env_shared`` says it must be copied before it is changed.
    Copying on every change instead made each ``%set env`` line cost the size of the whole
    environment: 25,000 of them took seconds."""
    tag: str = "default"
    priority: int = 0
    retries: int = 2
    redundancy: int = 2
    timeout: int = 0  # seconds an execution may run (0: no limit)
    isolate: bool = False
    home: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    env_shared: bool = dataclasses.field(default=True, repr=False, compare=False)


@dataclasses.dataclass(kw_only=True)
class Defaults(Options):
    after: tuple[int, ...] = ()

    def spec(self, cmd: str, line: int, name: str | None = None,
             file: str = "<submit>") -> JobSpec:
        opts = {f.name: getattr(self, f.name) for f in dataclasses.fields(Options)}
        opts["env_shared"] = self.env_shared = True  # the job holds it now: copy before changing
        return JobSpec(cmd=cmd, line=line, name=name, file=file, after_ids=list(self.after),
                       **opts)


@dataclasses.dataclass(kw_only=True)
class JobSpec(Options):
    cmd: str
    line: int
    file: str = "<submit>"  # the file it came from (``%file``), for errors
    name: str | None = None
    after_names: list[str] = dataclasses.field(default_factory=list)
    after_ids: list[int] = dataclasses.field(default_factory=list)
    deps: list[int] = dataclasses.field(default_factory=list)  # indexes into the submission

    @property
    def where(self) -> str:
        """``FILE:LINE``: how errors about this job begin."""
        return f"{self.file}:{self.line}"


def _kib(n: int) -> str:
    return f"{n >> 10} KiB"


def env_bytes(env: dict[str, str]) -> int:
    """The size of an environment as the limit counts it: the bytes of its K=V pairs."""
    return sum(len(k.encode()) + 1 + len(v.encode()) for k, v in env.items())


EMPTY_RECORD = len(json.dumps({"t": 1 << 63, "job": 1 << 63, "cmd": "", "home": "", "env": {},
                               "isolate": False, "timeout": MAX_TIMEOUT})) + len("run \n")


def env_sizes(env: dict[str, str]) -> tuple[int, int]:
    """(the K=V bytes the limit counts, the bytes of its JSON in an assignment)."""
    return env_bytes(env), len(json.dumps(env)) - 2  # ASCII: characters are bytes


def check_size(spec: JobSpec, where: str, env: tuple[int, int] | None = None) -> int:
    """Refuse a job too large for a worker's read of its assignment (see the module's Sizes);
    returns the size of that assignment. ``env``: ``env_sizes(spec.env)``, if known."""
    hint = "; put a long command in a script and run that"
    n = len(spec.cmd.encode())
    if n > MAX_CMD:
        raise JobFileError(f"{where}: the command is {n} bytes; the limit is {_kib(MAX_CMD)} "
                           f"({MAX_CMD} bytes){hint}")
    n, env_json = env or env_sizes(spec.env)
    if n > MAX_ENV:
        raise JobFileError(f"{where}: the environment (env:K=V, %set env) is {n} bytes; the "
                           f"limit is {_kib(MAX_ENV)} ({MAX_ENV} bytes)")
    # what the scheduler sends (ops.claim), with the largest ids it could carry
    n = EMPTY_RECORD + len(json.dumps(spec.cmd)) - 2 + len(json.dumps(spec.home or "")) - 2 \
        + env_json
    if n > MAX_RECORD:
        raise JobFileError(f"{where}: the job (command, home and environment, encoded for the "
                           f"worker) is {n} bytes; the limit is {_kib(MAX_RECORD)} "
                           f"({MAX_RECORD} bytes){hint}")
    return n


def _shown(value: str) -> str:
    """A user's value in a message, cut short: a 10,000-digit number is not worth repeating."""
    return value if len(value) <= 32 else value[:29] + "..."


def _int(value: str, key: str, where: str) -> int:
    """``value`` as a whole number in ``RANGES[key]`` (the database keeps it in 32 bits)."""
    low, high = RANGES[key]
    try:
        n = int(value) if len(value) <= 32 else low - 1 if value.startswith("-") else high + 1
    except ValueError:
        raise JobFileError(f"{where}: {key} must be a whole number, not {_shown(value)!r}") \
            from None
    if n < low and key == "redundancy":
        raise JobFileError(f"{where}: redundancy must be 1 or more (1 turns redundancy off), "
                           f"not {n}")
    if n < low and low == 0:
        raise JobFileError(f"{where}: {key} must be 0 or more, not {n}")
    if not low <= n <= high:
        raise JobFileError(f"{where}: {key} must be between {low} and {high}, not "
                           f"{_shown(value)}")
    return n


def job_id(part: str) -> int | None:
    """``part`` as a job id (1 to MAX_ID), or None if it is not one."""
    if not part.isdigit() or len(part) > 19 or not 0 < int(part) <= MAX_ID:
        return None
    return int(part)


def _ids(value: str, where: str) -> tuple[int, ...]:
    out = []
    for part in filter(None, value.split(",")):
        n = job_id(part)
        if n is None:
            raise JobFileError(f"{where}: after {_shown(value)!r}: give job ids (numbers from 1 "
                               f"to {MAX_ID}), e.g. 12,13")
        out.append(n)
    return tuple(out)


def apply_option(target: Options, key: str, value: str, where: str) -> None:
    """Set one option (from ``%set KEY VALUE`` or a ``KEY:VALUE`` word), checking it."""
    if key == "tag":
        if not TAG_RE.fullmatch(value):
            raise JobFileError(f"{where}: tag {value!r}: use letters, digits, '.', '_' or '-'")
        target.tag = value
    elif key == "priority":
        target.priority = _int(value, key, where)
    elif key == "retries":
        target.retries = _int(value, key, where)
    elif key == "redundancy":
        target.redundancy = _int(value, key, where)
    elif key == "timeout":
        target.timeout = _int(value, key, where)
    elif key == "isolate":
        if value not in ("on", "off", "1", "0", "yes", "no"):
            raise JobFileError(f"{where}: isolate {value!r}: say on or off")
        target.isolate = value in ("on", "1", "yes")
    elif key == "home":
        if not value.startswith("/"):
            raise JobFileError(f"{where}: home {value!r} must be an absolute path")
        target.home = value
    elif key == "env":
        k, eq, v = value.partition("=")
        if not eq or not k or "\0" in value:
            raise JobFileError(f"{where}: env {_shown(value)!r}: expected KEY=VALUE")
        if target.env_shared:
            target.env, target.env_shared = dict(target.env), False
        target.env[k] = v
    elif key == "after" and isinstance(target, Defaults):
        target.after = _ids(value, where)
    else:
        raise JobFileError(f"{where}: unknown option {key!r}; expected one of: "
                           + ", ".join(KEYS))


MAX_SUBMIT_BYTES = 256 << 20  # the jobs of one submission, as workers would get them


class Parser:
    """Feed text as it arrives (lines may be split across writes); :meth:`finish` resolves names
    and refuses cycles. Errors are raised at the line that caused them.

    A submission is bounded: at most ``max_jobs`` jobs (None: no limit) and ``max_bytes`` of
    assignments (each job's command, home and environment, as its worker would get them: one
    environment set once and shared by 100,000 jobs is 100,000 copies in the database)."""

    def __init__(self, defaults: Defaults | None = None, filename: str = "<submit>", *,
                 max_jobs: int | None = None, max_bytes: int = MAX_SUBMIT_BYTES) -> None:
        self.defaults = defaults or Defaults()
        self.filename = filename
        self.lineno = 0
        self.jobs: list[JobSpec] = []
        self.names: dict[str, int] = {}
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.size = 0  # bytes of the assignments so far
        self.env_size = env_bytes(self.defaults.env)  # of the defaults' environment, kept up
        # id → (environment, its sizes): jobs share their environment (see Options)
        self._env_sizes: dict[int, tuple[dict[str, str], tuple[int, int]]] = {}
        self._partial = ""

    def _add(self, spec: JobSpec, where: str) -> None:
        """Count ``spec`` against the submission's limits, then keep it."""
        if self.max_jobs is not None and len(self.jobs) >= self.max_jobs:
            raise JobFileError(f"{where}: more than {self.max_jobs} jobs in one submission, the "
                               "limit (brasil serve --max-jobs-per-submission); split the jobs "
                               "and submit the parts one after another")
        cached = self._env_sizes.get(id(spec.env))
        if cached is None or cached[0] is not spec.env:  # a shared one is measured once
            cached = self._env_sizes[id(spec.env)] = (spec.env, env_sizes(spec.env))
        self.size += check_size(spec, where, cached[1])
        if self.size > self.max_bytes:
            raise JobFileError(f"{where}: the jobs so far come to {self.size} bytes (commands, "
                               f"homes and environments, as workers get them); the limit is "
                               f"{self.max_bytes >> 20} MiB per submission: submit fewer at "
                               "once, or put a large environment in a script")
        if spec.name is not None:
            self.names[spec.name] = len(self.jobs)
        self.jobs.append(spec)

    def where(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def feed(self, text: str) -> None:
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line)
        if len(self._partial) > MAX_RECORD:  # no job line can be this long: say so now
            raise JobFileError(f"{self.filename}:{self.lineno + 1}: the line is longer than "
                               f"{_kib(MAX_RECORD)} ({len(self._partial)} characters so far); "
                               f"a job's command may be at most {_kib(MAX_CMD)} ({MAX_CMD} "
                               "bytes): put a long command in a script and run that")

    def line(self, raw: str) -> None:
        self.lineno += 1
        if "\0" in raw:
            raise JobFileError(f"{self.where()}: the line holds a NUL byte (\\0); a command, "
                               "path or environment value cannot carry one: remove it")
        line = raw.strip()
        if not line or line.startswith("#"):
            return
        if line.startswith("%"):
            return self._directive(line)
        if line.startswith("job ") or line == "job":
            return self._job_line(line)
        self._add(self.defaults.spec(line, self.lineno, file=self.filename), self.where())

    def _directive(self, line: str) -> None:
        word, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if word == "file":
            self.filename, self.lineno = rest or "<submit>", 0
            return
        if word != "set":
            raise JobFileError(f"{self.where()}: unknown directive %{word}; expected %set KEY "
                               "VALUE or %file NAME")
        key, _, value = rest.partition(" ")
        value = value.strip()
        if key != "env":
            return apply_option(self.defaults, key, value, self.where())
        k = value.partition("=")[0]
        before = env_bytes({k: self.defaults.env[k]}) if k in self.defaults.env else 0
        apply_option(self.defaults, key, value, self.where())
        self.env_size += env_bytes({k: self.defaults.env[k]}) - before
        if self.env_size > MAX_ENV:  # say so now, not at each job below
            raise JobFileError(f"{self.where()}: the environment set so far (%set env) is more "
                               f"than {_kib(MAX_ENV)} ({MAX_ENV} bytes), the limit for a job's")

    def _job_line(self, line: str) -> None:
        where = self.where()
        head, sep, cmd = line.partition(" -- ")
        if not sep or not cmd.strip():
            raise JobFileError(f"{where}: expected: job NAME [after:A,B] [OPTION…] -- CMD "
                               f"(got {line[:80]!r})")
        try:
            words = shlex.split(head)[1:]
        except ValueError as e:
            raise JobFileError(f"{where}: {e}") from None
        if not words:
            raise JobFileError(f"{where}: a job line needs a NAME: job NAME … -- CMD")
        name = words[0]
        if not NAME_RE.fullmatch(name):
            raise JobFileError(f"{where}: job name {name!r}: start with a letter or '_', then "
                               "letters, digits, '.', '_' or '-'")
        if name in self.names:
            raise JobFileError(f"{where}: job {name!r} is already defined at line "
                               f"{self.jobs[self.names[name]].line}")
        spec = self.defaults.spec(cmd.strip(), self.lineno, name, self.filename)
        for w in words[1:]:
            if w in ("isolate", "shared"):
                spec.isolate = w == "isolate"
                continue
            key, colon, value = w.partition(":")
            if not colon:
                raise JobFileError(f"{where}: option {w!r}: expected KEY:VALUE, isolate or shared")
            if key == "after":
                if not value.strip(","):
                    raise JobFileError(f"{where}: after: names no job; write after:A,B (names in "
                                       "this file, or job ids), or leave the option out")
                for dep in filter(None, value.split(",")):
                    if dep[:1].isdigit():
                        spec.after_ids += _ids(dep, where)
                    else:
                        spec.after_names.append(dep)
            else:
                apply_option(spec, key, value, where)
        self._add(spec, where)

    def finish(self) -> list[JobSpec]:
        if self._partial.strip():
            self.line(self._partial)
        self._partial = ""
        for spec in self.jobs:
            for dep in spec.after_names:
                if dep not in self.names:
                    raise JobFileError(f"{spec.where}: after:{dep}: no job named "
                                       f"{dep!r} in this submission (name it with a job line, or "
                                       "give an existing job's id)")
                spec.deps.append(self.names[dep])
        cycle = find_cycle(self.jobs)
        if cycle:
            names = " after ".join(self.jobs[i].name or f"line {self.jobs[i].line}" for i in cycle)
            raise JobFileError(f"{self.jobs[cycle[0]].where}: dependency cycle: "
                               f"{names}; a job cannot (even indirectly) run after itself")
        return self.jobs


def find_cycle(jobs: list[JobSpec]) -> list[int]:
    """A cycle among ``jobs`` (indexes, first repeated at the end), or [] — iteratively, so a
    100,000-job chain does not exhaust the stack."""
    state = [0] * len(jobs)  # 0 new, 1 on the path, 2 finished
    for root in range(len(jobs)):
        if state[root]:
            continue
        path: list[int] = []
        stack: list[tuple[int, Iterator[int]]] = [(root, iter(jobs[root].deps))]
        state[root] = 1
        path.append(root)
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(jobs[nxt].deps)))
    return []


def parse(text: str, defaults: Defaults | None = None, filename: str = "<submit>") -> list[JobSpec]:
    p = Parser(defaults, filename)
    p.feed(text)
    return p.finish()
