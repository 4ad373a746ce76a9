"""Issue 16: the README and the docs as tests. Every command block of README.md, docs/push.md,
docs/batch.md and docs/reference.md runs, as written, on a tree made as the README makes it.

The tree is the README's own: its `brasil cluster up --depth 2 …` block, with `/tmp/c` made a
temporary directory, and its `export BRASIL=… BRASIL_SECRET_FILE=…` line starts every script.
Each block runs as one bash script (so `s=$(…)` reaches the lines after it) in a work directory
holding the files the examples name (WORK_FILES), with HOME and XDG_RUNTIME_DIR temporary too.
Each command must exit 0 and print no traceback; where the doc states an output (`# → 0`) or
EXPECT says what it must show, that is checked. `brasil serve` lines run in the background in a
network namespace of their own (so 127.0.0.1:5670 is theirs), are asked for their status, and
stopped; commands that follow forever (FOREVER) run for a while and are stopped with SIGINT.

Nothing is skipped silently: a block that holds no commands is in NOT_COMMANDS, a command not
run is in NOT_RUN, each with its reason, and an entry naming nothing in the docs fails. A command
that fails for a known reason is in KNOWN_FAILURES: it must still fail (so that the entry is
removed when it is fixed).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from docblocks import Block, Command, blocks, commands
from helpers import why_gdb_cannot_call
from terminal import BIN

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/push.md", "docs/batch.md", "docs/reference.md"]
BLOCKS = [b for d in DOCS for b in blocks(ROOT / d, d)]

# Blocks that hold no shell commands: (file, first line) → why.
NOT_COMMANDS: dict[tuple[str, str], str] = {
    ("docs/push.md", "push -c 'PIPELINE'      run it and exit with its status"):
        "push's synopsis (PIPELINE, SCRIPT, ADDR are placeholders); tests/test_push*.py run each",
    ("docs/batch.md", "# plain lines: one command each, with the options given to `brasil submit`"):
        "a job file, not commands: test_the_job_file_example_parses checks it",
    ("docs/batch.md", "batch/"): "a listing of the scheduler's files",
    ("docs/batch.md", "from brasil.batch.api import Batch"):
        "a Python API sketch with a user's paths (/run/user/1000, /data/run); the API is run "
        "by tests/test_batch_*.py",
    ("docs/reference.md", "/csrv/"): "a listing of a node's namespace",
    ("docs/reference.md", "NAME SLOTS FREE LOAD1 MEM_FREE_MB STATE KEY=VALUE…"):
        "the format of status lines",
    ("docs/reference.md",
     "/csrv/query/<pred>/<pred>/…/     the nodes of this node's subtree matching every predicate"):
        "a listing of the query files",
    ("docs/reference.md", "<id>/"): "a listing of a session's files",
    ("docs/reference.md", "<id>/proc/RANK/    one per rank of the session, wherever it runs "
     "(through the tree)"): "a listing of a session's process files",
    ("docs/reference.md", "metrics/"): "a listing of a node's metrics files",
    ("docs/reference.md",
     "session ID STATE subs N [STATE COUNT]… mux MODE rs SEPARATOR user U ranks RANKS [caps "
     "K=N…][; splice …][; data ADDR]"): "the format of the ctl state line",
    ("docs/reference.md", "# job.sh: phase 1 on every rank; rank 0 grows the session for phase "
     "2, then shrinks it back"): "a script a session's rank runs (brasil ctl needs a session "
     "around it): tests/test_elastic.py runs the same job on a 1+3+9 tree",
    ("docs/reference.md", "SUB NODE SLOT STATE PID EXIT_STATUS [ERROR…]"):
        "the format of a session's status lines",
    ("docs/reference.md", "batch/"): "a listing of the scheduler's files",
    ("docs/reference.md", '[caps."*"]          # everyone not named below'):
        "a policy file: tests/test_policy.py parses it",
    ("docs/reference.md", "# the global /proc: system files by node, processes merged all the "
     "way down"): "a view's text: tests/test_final.py defines it on a 1+3+9 tree and reads "
     "through it",
    ("docs/reference.md", "/csrv/local/subtree             the nodes, their load and slots (a "
     "node gone from it: lost)"): "a listing of the files the dashboard reads",
}

# Commands not run: command → why. (The README's tree lines are run by the `tree` fixture.)
NOT_RUN: dict[str, str] = {
    "make demo": "sets up the machine (apt, pip) and starts its own tree: the suite's own job",
    "make test": "runs this whole suite",
    "make bench": "installs peers and runs the benchmarks for minutes",
    "make bench-compare REV=3cecb6d": "installs REV in a virtualenv and benchmarks it against "
        "this tree for minutes",
    "make bench-together REV=3cecb6d": "installs REV and brings two trees of 73 daemons up "
        "for minutes",
    "make fuzz": "fuzzes the decoder for FUZZ_SECONDS",
    "brasil cluster up --hosts 'node[01-64]' --fanout 8":
        "needs 64 ssh hosts: tests/test_deploy.py forms a tree over ssh",
    "export BRASIL=node01:5670 BRASIL_SECRET_FILE=$XDG_RUNTIME_DIR/brasil/cluster/secret":
        "names the ssh tree's root (the next line runs on the README's local tree)",
    "brasil cluster down": "stops the ssh tree (tests/test_deploy.py)",
}
BY_FIXTURE = "run by the tree fixture, with /tmp/c a temporary directory"

KNOWN_FAILURES: dict[str, str] = {}

# Commands that call into a Python rank through gdb: their block is skipped, saying why, on a
# machine whose gdb cannot do that (helpers.why_gdb_cannot_call).
NEEDS_GDB_CALLS = {"brasil pbreak --wait 20 py:ticker.step", "brasil peval 'len(queue)'"}

# Commands that follow forever: run this many seconds, then SIGINT (as Ctrl-C would).
FOREVER: dict[str, float] = {
    "brasil ptail -f --where 'name=n1*' fs/var/log/app.log": 8,
    "brasil ptop": 8,
    "brasil web": 8,
}

# The files the examples name, in the work directory (mode 0755 when the name says it runs).
WORK_FILES: dict[str, str] = {
    "corpus": "the quick brown fox\njumps over the lazy dog\nthe dog sleeps\n",
    "script.push": "# a PUSH script\nseq 10 |<[2] cat >| sort -n | tail -3\ncd conf; ls\n",
    "jobs.txt": "job a -- echo a > a.out\njob b after:a -- cat a.out > b.out\n",
    "jobs": "job prep -- echo prep > prep.out\njob left after:prep -- cat prep.out > left.out\n"
            "job right after:prep -- cat prep.out > right.out\n"
            "job join after:left,right -- cat left.out right.out > all.out\n",
    "analyse": "#!/bin/sh\nwc -c < \"$1\" > \"$1.analysed\"\n",
    "input.1": "one input\n",
    "big": "3\n1\n2\n",
    "conf/app.conf": "level=info\n",
    "ticker.py": "import os\nimport time\n\ndef step(queue):\n    time.sleep(0.01)\n\n\n"
                 "queue = [] if os.environ['BRASIL_RANK'] == '3' else list(range(8))\n"
                 "while True:\n    step(queue)\n",
}
# The files the fs/ examples name, under the directory the tree exports (its fs/).
EXPORT_FILES: dict[str, str] = {
    "etc/hosts": "127.0.0.1 localhost\n",
    "var/log/app.log": "started\nERROR disk full\nstopped\n",
    "tmp/.keep": "",
}


@dataclasses.dataclass
class Ran:
    cmd: Command
    rc: int
    out: str
    err: str
    work: pathlib.Path


def _lines(r: Ran) -> list[str]:
    return [ln for ln in r.out.splitlines() if ln.strip()]


def _status_of_13(r: Ran) -> str | None:
    lines = _lines(r)
    if len(lines) != 14 or not lines[-1].startswith("total ") or "nodes=13" not in lines[-1]:
        return "expected 13 node lines and a total with nodes=13"
    return None


def _every_node(r: Ran) -> str | None:
    nodes = {ln.split("/", 1)[0] for ln in _lines(r)}
    return None if len(nodes) == 13 else f"expected a line from each of 13 nodes, got {nodes}"


def _contains(*words: str) -> Callable[[Ran], str | None]:
    def check(r: Ran) -> str | None:
        missing = [w for w in words if w not in r.out + r.err]
        return f"expected {missing} in the output" if missing else None
    return check


def _grouped(total: int) -> Callable[[Ran], str | None]:
    """`-b` groups covering ``total`` nodes in all (uptime's clock may split them by a second)."""
    def check(r: Ran) -> str | None:
        counts = [int(m) for m in re.findall(r"^\S+ \((\d+)\)$", r.out, re.M)]
        return None if sum(counts) == total else f"groups of {counts} nodes, not {total} in all"
    return check


def _file_made(name: str) -> Callable[[Ran], str | None]:
    def check(r: Ran) -> str | None:
        return None if (r.work / name).is_file() else f"expected {name} to be made"
    return check


def _n_lines(n: int) -> Callable[[Ran], str | None]:
    def check(r: Ran) -> str | None:
        return None if len(_lines(r)) == n else f"expected {n} lines"
    return check


# What a command must show, beyond exit 0, no traceback and `# → VALUE`.
EXPECT: dict[str, Callable[[Ran], str | None]] = {
    "brasil run -- uname -r": _every_node,
    "brasil run -n 8 -- hostname": _n_lines(8),
    "brasil pbreak --wait 20 py:ticker.step": _contains(
        "stopped at = step (ticker.py:4)  [ranks 0-3 (4) on "),
    "brasil peval 'len(queue)'": _contains("len(queue) = 8  [ranks 0-2 (3) on ",
                                           "len(queue) = 0  [rank 3 (1) on "),
    "seq 100 | brasil run -n 4 --mux rr -- wc -l": _n_lines(4),
    "brasil cat /csrv/local/status": _status_of_13,
    "cat ~/m/csrv/local/$id/stdio": lambda r: (  # through clone held as the session's ctl
        None if len(_lines(r)) == 2 and all(":" in ln for ln in _lines(r))
        else "expected two dates"),
    "brasil gread --agg equiv fs/etc/hosts": _contains("localhost"),
    "brasil ptail -f --where 'name=n1*' fs/var/log/app.log": _contains("n1: ERROR disk full"),
    "brasil pgrep ERROR fs/var/log/app.log": _contains("ERROR disk full"),
    "brasil ptop": _contains("n3.3"),
    "brasil web": _contains("http://127.0.0.1:", "/?token="),
    "brasil serve": _contains("serving 9P on unix:", "127.0.0.1:5670"),
    "brasil serve --listen 127.0.0.1:0 --slots 4 --export ~/data": _contains("fs/"),
    "brasil serve --label rack=r7": _contains("rack=r7"),
    "push -c \"cat corpus |< tr -s ' ' '\\\\n' |#| sort | uniq -c >| sort -rn | head\"":
        _contains("3 the"),
    "push script.push": _contains("8\n9\n10\n", "app.conf"),
    "brasil wait --tag w && brasil report --tag w --out w.png": lambda r: (
        _file_made("b.out")(r) or _file_made("w.png")(r)),
    "brasil report --tag w --out w.png": _file_made("w.png"),
    "brasil ls '/csrv/query/arch=x86_64/mem>=4G/'": _contains("n3.3/", "gread"),
    "brasil cat /csrv/local/views/sys": _contains("deepmerge fs/var at var"),
    "brasil ls /csrv/query/view/sys/hosts": _contains("n0", "n3.3"),
    "brasil ls '/csrv/query/name=n2*/view/sys/var/log/app.log'": lambda r: (
        None if sorted(_lines(r)) == ["n2", "n2.1", "n2.2", "n2.3"]
        else "expected n2 and its children, one entry each"),
    "brasil gread --agg equiv view/sys/hosts": _contains("localhost", "(13)"),
    "brasil gread --agg count view/sys/var/log/app.log": _contains("13"),
    "brasil gread --where 'name=n1*' --agg sum status": lambda r: (
        None if any(ln.split()[:2] == ["-", "8"] for ln in _lines(r))
        else "expected n1's subtree summed: 4 nodes of 2 slots"),
    "brasil gread --agg mean --where 'name=n1*' 'metrics/history?load1&start=-3600&step=60'":
        lambda r: None if _lines(r) and all(
            re.fullmatch(r"\d+ [-+.\de]+", ln) for ln in _lines(r))
        else "expected TIME VALUE lines, a step a line",
    "cat ~/mnt/csrv/local/$s/stdio": _n_lines(2),
    "cat ~/mnt/csrv/local/$s/1/stdio": lambda r: (
        None if re.fullmatch(r"\s*1\s+\d+\s+\d+\s*", r.out) else "expected `date | wc`"),
    "brasil write /csrv/local/$s/ctl res 4": lambda r: (
        "expected the reservation to be made" if r.err else None),
    "brasil run -w 'n[1-3],n2.[1-2]' -b -- date": _contains("n[1-3],n2.[1-2]"),
    "brasil run -x n2 -N -- hostname": lambda r: (
        None if len(_lines(r)) == 12 and not any("/" in ln for ln in _lines(r))
        else "expected 12 lines (13 nodes but n2) without their NODE/RANK prefix"),
    "brasil run -b -- uptime": lambda r: _grouped(13)(r) or _contains("load average")(r),
    "brasil ls -l /csrv/local": _contains("clone", "status"),
    "brasil stat /csrv/local/arch": _contains("qid", "mode"),
    "push -c 'find . -type f |< xargs wc -l >| sort -rn'": _contains("./corpus", "total"),
    "brasil submit --tag w --isolate --file jobs.txt": lambda r: (
        None if re.fullmatch(r"\d+-\d+", _lines(r)[0] if _lines(r) else "")
        else "expected FIRST-LAST"),
    "brasil submit --tag w --isolate --file jobs": lambda r: (
        None if re.fullmatch(r"\d+-\d+", _lines(r)[0] if _lines(r) else "")
        else "expected FIRST-LAST"),
    "brasil wait --tag w": lambda r: (
        _file_made("all.out")(r) or _file_made("sorted")(r) or _file_made("input.1.analysed")(r)
        or (None if "failed" not in r.out else "expected every job done")),
    "brasil jobs --tag w": lambda r: (
        None if all(" done " in ln for ln in _lines(r) if ln.split()[0].isdigit())
        else "expected every job done"),
    "brasil submit --tag w -- ./analyse input.1": lambda r: (
        None if r.out.strip().isdigit() else "expected the job's id"),
}

PRELUDE = r"""
set +e
O=$1
_run() {  # N CMD: in this shell, so variables reach the next lines
    { eval "$2"; } >"$O/$1.out" 2>"$O/$1.err" </dev/null; echo $? >"$O/$1.rc"
}
_forever() {  # N SECONDS CMD: stopped with SIGINT, as Ctrl-C would; 124 says it was stopped
    timeout -s INT "$2" bash -c "$3" >"$O/$1.out" 2>"$O/$1.err" </dev/null; echo $? >"$O/$1.rc"
}
_daemon() {  # N CMD: in a network namespace of its own; asked for its status, then stopped
    unshare -n sh -c 'ip link set lo up && exec bash -c "$0"' "$2" \
        >"$O/$1.out" 2>"$O/$1.err" </dev/null &
    local pid=$! i addr
    for i in $(seq 600); do  # a deadline of 60 s for it to say where it serves
        grep -q 'serving 9P on' "$O/$1.err" && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    addr=$(sed -n 's/.*serving 9P on \([^, ]*\).*/\1/p' "$O/$1.err" | head -1)
    nsenter --net=/proc/$pid/ns/net env -u BRASIL_SECRET_FILE sh -c \
        'brasil ls --at "$0" /csrv/local && brasil cat --at "$0" /csrv/local/status' "$addr" \
        >>"$O/$1.out" 2>>"$O/$1.err"
    local probe=$?
    kill -TERM $pid; wait $pid; local rc=$?
    [ $probe = 0 ] || rc=$probe
    echo $rc >"$O/$1.rc"
}
"""
EPILOGUE = "for p in $(jobs -p); do kill -TERM $p; done; wait\n"


@dataclasses.dataclass
class Env:
    tmp: pathlib.Path
    work: pathlib.Path
    env: dict[str, str]
    export_line: str  # the README's `export BRASIL=…` line, made to name the tree


def _readme_tree_block() -> Block:
    return next(b for b in BLOCKS if b.first.startswith("brasil cluster up --depth"))


def _here(text: str, tree_dir: pathlib.Path) -> str:
    return re.sub(r"/tmp/c\b", str(tree_dir), text)


@pytest.fixture(scope="module")
def tree() -> Iterator[Env]:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="brasil-docs-"))
    home, work, run = tmp / "home", tmp / "work", tmp / "run"
    for d in (home / "data", home / "mnt", work, run):
        d.mkdir(parents=True)
    run.chmod(0o700)
    for name, text in WORK_FILES.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
        if text.startswith("#!"):
            (work / name).chmod(0o755)
    head_c = subprocess.run(["head", "-c", "300000", "/dev/urandom"], capture_output=True)
    (work / "big.tar").write_bytes(head_c.stdout)
    for name, text in EXPORT_FILES.items():
        (tmp / "export" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "export" / name).write_text(text)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', os.defpath)}",
           "HOME": str(home), "XDG_RUNTIME_DIR": str(run)}
    for k in ("BRASIL", "BRASIL_SECRET_FILE", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        env.pop(k, None)
    cmds = commands(_readme_tree_block())
    up = next(c.text for c in cmds if c.text.startswith("brasil cluster up"))
    export = next(c.text for c in cmds if c.text.startswith("export BRASIL="))
    down = next(c.text for c in cmds if c.text.startswith("brasil cluster down"))
    tree_dir = tmp / "c"
    up += f" --export {tmp / 'export'}"  # the fs/ examples' files, not the machine's /etc
    r = subprocess.run(["bash", "-c", _here(up, tree_dir)], env=env, cwd=work,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    try:
        yield Env(tmp, work, env, _here(export, tree_dir))
    finally:
        subprocess.run(["brasil", "umount", str(home / "mnt")], env=env, capture_output=True,
                       timeout=60)
        r = subprocess.run(["bash", "-c", _here(down, tree_dir)], env=env, cwd=work,
                           capture_output=True, text=True, timeout=180)
        shutil.rmtree(tmp, ignore_errors=True)
    assert r.returncode == 0 and "stopped 13" in r.stdout + r.stderr, r.stdout + r.stderr


def _fixture_commands() -> set[str]:
    return {c.text for c in commands(_readme_tree_block())} - {"brasil cat /csrv/local/status"}


def _is_daemon(cmd: str) -> bool:
    return cmd == "brasil serve" or cmd.startswith("brasil serve ")


def command_blocks() -> list[Block]:
    return [b for b in BLOCKS if (b.file, b.first) not in NOT_COMMANDS]


def run_block(block: Block, env: Env) -> list[Ran]:
    """Run ``block``'s commands, as one bash script, in env's work directory."""
    out = pathlib.Path(tempfile.mkdtemp(dir=env.tmp, prefix="out-"))
    script = [PRELUDE, env.export_line]
    todo: list[tuple[int, Command]] = []
    for n, cmd in enumerate(commands(block)):
        if cmd.text in NOT_RUN or cmd.text in _fixture_commands():
            continue
        todo.append((n, cmd))
        q = shlex.quote(cmd.text)
        if _is_daemon(cmd.text):
            script.append(f"_daemon {n} {q}")
        elif cmd.text in FOREVER:
            script.append(f"_forever {n} {FOREVER[cmd.text]} {q}")
        else:
            script.append(f"_run {n} {q}")
    script.append(EPILOGUE)
    r = subprocess.run(["bash", "-c", "\n".join(script), "docs", str(out)], env=env.env,
                       cwd=env.work, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    ran = []
    for n, cmd in todo:
        rc_file = out / f"{n}.rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else -1
        ran.append(Ran(cmd, rc, (out / f"{n}.out").read_text(errors="replace"),
                       (out / f"{n}.err").read_text(errors="replace"), env.work))
    return ran


def problems(r: Ran) -> list[str]:
    """What is wrong with one command's run, by the doc's word and EXPECT's."""
    found = []
    stopped = r.cmd.text in FOREVER and r.rc == 124
    if r.rc != 0 and not stopped:
        found.append(f"exit status {r.rc}")
    if "Traceback" in r.out + r.err:
        found.append("a traceback")
    arrow = re.match(r"→\s*([^:\s]+)", r.cmd.comment)
    if arrow and r.out.strip() != arrow.group(1):
        found.append(f"the doc says → {arrow.group(1)}")
    check = EXPECT.get(r.cmd.text)
    if check and not found:
        why = check(r)
        if why:
            found.append(why)
    return found


@pytest.mark.parametrize("block", command_blocks(), ids=lambda b: b.id)
def test_the_doc_block_runs_as_written(tree: Env, block: Block) -> None:
    if os.geteuid() != 0 and any(_is_daemon(c.text) for c in commands(block)):
        pytest.skip("its `brasil serve` lines run in network namespaces of their own "
                    "(unshare -n, nsenter): needs root")
    if any(c.text in NEEDS_GDB_CALLS for c in commands(block)) and why_gdb_cannot_call():
        pytest.skip(why_gdb_cannot_call())
    report = []
    for r in run_block(block, tree):
        found = problems(r)
        known = KNOWN_FAILURES.get(r.cmd.text)
        where = f"{block.file}:{r.cmd.line}: {r.cmd.text}"
        if found and not known:
            report.append(f"{where}: {', '.join(found)}\n  stdout: {r.out[-800:]!r}\n"
                          f"  stderr: {r.err[-800:]!r}")
        elif known and not found:
            report.append(f"{where}: now runs as written; remove it from KNOWN_FAILURES "
                          f"({known})")
    assert not report, "\n".join(report)


def test_every_listed_block_and_command_is_in_the_docs() -> None:
    """The tables name only what the docs hold, so none outlives its example."""
    firsts = {(b.file, b.first) for b in BLOCKS}
    texts = {c.text for b in BLOCKS for c in commands(b)}
    stale = [k for k in NOT_COMMANDS if k not in firsts]
    stale += [k for k in [*NOT_RUN, *KNOWN_FAILURES, *FOREVER, *EXPECT, *NEEDS_GDB_CALLS]
              if k not in texts]
    assert not stale, f"listed but not in the docs: {stale}"
    assert _fixture_commands() <= texts


def test_the_job_file_example_parses() -> None:
    """docs/batch.md's job file is the format's example: it parses, names and all."""
    from brasil.batch.jobfile import Parser
    block = next(b for b in BLOCKS if b.file == "docs/batch.md" and b.first.startswith("# plain"))
    p = Parser(filename="docs/batch.md")
    p.feed("\n".join(t for _, t in block.lines) + "\n")
    jobs = p.finish()
    assert [j.name for j in jobs] == [None, "prep", "left", "right", "join"]
    join = jobs[-1]
    assert join.after_ids == [1042] and [jobs[i].name for i in join.deps] == ["left", "right"]
