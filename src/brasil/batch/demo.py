"""The batch part of `make demo`: a DAG of 30 jobs on 4 workers, one of them 10× slower.

``run_batch_demo(root_address, secret_file, workdir, print)`` submits the workload to the
scheduler of the daemon at ``root_address``, starts four `brasil worker` processes (one with
``SLOW=10`` in its environment, which the jobs read to stretch their work), waits, prints the
report and the Gantt chart's path, stops the workers, and returns the chart's path. Redundant
execution is what keeps the slow worker from stretching the makespan; the demo says how close
it came to the time the workload would take with four healthy workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from ..exec.pychild import SAFE_CWD, python_argv
from . import report
from .api import Batch

UNIT = 0.4  # seconds of work per job on a healthy worker


def workload(unit: float = UNIT) -> str:
    """prep → 24 analyses (isolated) → 4 merges → 1 summary: 30 jobs, a DAG."""
    work = f"sleep $(awk 'BEGIN {{print {unit} * ('${{SLOW:-1}}')}}')"
    lines = ["job prep -- mkdir -p parts && seq 1 24 > inputs"]
    for i in range(1, 25):
        lines.append(f"job part{i} after:prep isolate -- {work}; "
                     f"echo part {i} on $BRASIL_WORKER > parts/{i}")
    for g in range(4):
        deps = ",".join(f"part{i}" for i in range(g * 6 + 1, g * 6 + 7))
        lines.append(f"job merge{g} after:{deps} isolate -- cat "
                     + " ".join(f"parts/{i}" for i in range(g * 6 + 1, g * 6 + 7))
                     + f" > merged{g}")
    lines.append("job summary after:merge0,merge1,merge2,merge3 -- cat merged0 merged1 merged2 "
                 "merged3 | wc -l > summary")
    return "\n".join(lines) + "\n"


async def run_batch_demo(root_address: str, secret_file: str | None, workdir: str,
                         print: Callable[..., None] = print) -> str:  # noqa: A002
    home = os.path.join(workdir, "batch-home")
    os.makedirs(home, exist_ok=True)
    png = os.path.join(workdir, "batch-report.png")
    print("A batch workload: prep → 24 isolated analyses → 4 merges → summary (30 jobs), on 4 "
          "workers, one of them 10× slower")
    base = python_argv("brasil.cli.main", "worker", "--at", root_address, "--slots", "1", "-q") \
        + (["--secret-file", secret_file] if secret_file else [])
    procs = []
    try:
        for i in range(4):
            env = {**os.environ, **({"SLOW": "10"} if i == 0 else {})}
            procs.append(subprocess.Popen(  # noqa: ASYNC220 - the demo's four workers, at its start
                base + ["--name", f"demo{i}{'-slow' if i == 0 else ''}",
                        "--workdir", os.path.join(workdir, f"worker{i}")],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=SAFE_CWD,
                start_new_session=True))
        b = await Batch.connect(root_address, secret_file)
        try:
            tag = f"demo{int(time.time())}"
            t0 = time.monotonic()
            sub = await b.submit_stream([workload().encode()], tag=tag, home=home)
            print(f"  submitted jobs {sub.first}-{sub.last} (tag {tag}); waiting…")
            summary = await asyncio.wait_for(b.wait(tag=tag), 120)
            took = time.monotonic() - t0
            rep = report.build(tag, await b.jobs(tag), await b.events(tag))
        finally:
            await b.close()
        ideal = UNIT * (1 + 24 / 4 + 1) + 0.1  # four healthy workers, no overheads
        print(f"  {summary.get('done', 0)} done, {summary.get('failed', 0)} failed in {took:.1f} s "
              f"(four healthy workers would need about {ideal:.1f} s; the slow worker alone "
              f"would need {UNIT * 10:.0f} s per job)")
        print(report.text(rep))
        await asyncio.get_running_loop().run_in_executor(None, report.write, rep, png)
        print(f"  Gantt chart: {png}")
        with open(os.path.join(home, "summary")) as f:  # noqa: ASYNC230 - one short line
            print(f"  summary of the workload's output: {f.read().strip()} lines merged")
        return png
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def main() -> int:
    """Standalone: a daemon of its own in a temporary directory, then the demo."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="brasil-batch-demo-") as d:
        sock = os.path.join(d, "s.sock")
        serve = subprocess.Popen(python_argv("brasil.cli.main", "serve", "--listen",
                                             f"unix:{sock}", "--slots", "0", "--state-dir",
                                             os.path.join(d, "state"), "-q"), cwd=d,
                                 start_new_session=True)
        try:
            async def go() -> str:
                for _ in range(400):
                    try:
                        b = await Batch.connect(f"unix:{sock}")
                        await b.state()
                        await b.close()
                        break
                    except (OSError, ConnectionError, Exception):  # noqa: BLE001 - starting
                        await asyncio.sleep(0.05)
                return await run_batch_demo(f"unix:{sock}", None, d)
            png = asyncio.run(go())
            keep = os.path.join(os.getcwd(), "batch-report.png")
            os.replace(png, keep) if os.path.exists(png) else None
            print(f"  (kept as {keep})")
        finally:
            serve.terminate()
            serve.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
