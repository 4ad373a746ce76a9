"""`make demo`: a local cluster doing real work, driven through plain files.

It starts a small tree of daemons (`brasil cluster up`: a root and three children, two slots
each), mounts the root's namespace with `brasil mount`, and then uses nothing but `echo` and `cat`
on the mount: the Brasil paper's two examples, a command on every node, the aggregated status, and
a sum over a million numbers split record by record across the tree. Then the paper's word
histogram as a PUSH pipeline across the tree, a batch workload with a slow worker, and the web
dashboard (`brasil web`) photographed by headless Chromium into demo-output/. Everything
is torn down at the end, whatever happens.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time

from .exec.pychild import python_argv

STEPS = [
    ("The paper's first example: a session, 4 slots, `date` on each, the aggregated output", [
        "cat $M/clone",
        "echo 'res 4' > $M/0/ctl",
        "echo 'exec date' > $M/0/ctl",
        "cat $M/0/stdio",
        "cat $M/0/status",
        "echo close > $M/0/ctl",
    ]),
    ("The paper's second example: `date | wc` across two nodes, spliced node to node", [
        "cat $M/clone",
        "echo 'res 2' > $M/1/ctl",
        "echo 'exec date' > $M/1/0/ctl",
        "echo 'exec wc' > $M/1/1/ctl",
        "echo 'xsplice 0 1' > $M/1/ctl",
        "cat $M/1/1/stdio",
        "date | wc    # the same, locally",
        "echo close > $M/1/ctl",
    ]),
    ("A command on every slot of the tree", [
        "cat $M/clone",
        "echo 'res 8' > $M/2/ctl",
        "echo 'exec echo \"$BRASIL_NODE slot $BRASIL_SUB: $(uname -s) pid $$\"' > $M/2/ctl",
        "cat $M/2/stdio | sort",
        "cat $M/status   # every node of the tree, then the total",
        "echo close > $M/2/ctl",
    ]),
    ("Real work: sum 1..1,000,000, each line to one of 8 slots (mux rr), partial sums added", [
        "cat $M/clone",
        "echo 'res 8' > $M/3/ctl",
        "echo 'mux rr' > $M/3/ctl",
        r"""echo 'exec awk "{s+=\$1} END {printf \"%.0f\\n\", s}"' > $M/3/ctl""",
        "seq 1 1000000 > $M/3/stdio &  cat $M/3/stdio | tee /dev/stderr | "
        r"""awk '{t+=$1} END {printf "total %.0f\n", t}'; wait""",
        "echo 'expected total 500000500000'",
        "cat $M/3/wait",
        "echo close > $M/3/ctl",
    ]),
]


def sh(cmd: str, env: dict[str, str], show: str | None = None) -> int:
    print(f"$ {show or cmd}", flush=True)
    p = subprocess.run(["sh", "-c", cmd], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    for line in p.stdout.splitlines():
        print(f"  {line}")
    if p.returncode:
        print(f"  (exit status {p.returncode})")
    return p.returncode


def group_step(env: dict[str, str], tmp: str) -> int:
    """A query and an equiv read: the cluster filtered by path, and one file read on every node,
    condensed inside the tree (each node exports its own directory)."""
    exports = os.path.join(tmp, "exports")
    for name in ("n0", "n1", "n2", "n3"):
        with open(os.path.join(exports, name, "motd"), "w") as f:
            f.write("welcome to the cluster\n" if name != "n2" else "n2 is being serviced\n")
    env = {**env, "B": shlex.join(python_argv("brasil.cli.main"))}
    print("\n== Queries and group reads: the tree filtered by path, read condensed")
    failed = sh("ls \"$M/../query/name=n[1-3]/mem>=64M/\"", env,
                "ls 'mnt/csrv/query/name=n[1-3]/mem>=64M/'    # a query path, through the mount")
    failed |= sh("cat \"$M/../query/name=n[2-3]/status\" | cut -d' ' -f1-6", env,
                 "cat 'mnt/csrv/query/name=n[2-3]/status'")
    failed |= sh("$B gread --agg equiv fs/motd", env, "brasil gread --agg equiv fs/motd")
    failed |= sh("$B gread --agg sum --where 'name=n*' status | cut -c1-60", env,
                 "brasil gread --agg sum status    # every node's numbers, summed in the tree")
    return failed


def push_step(env: dict[str, str], tmp: str) -> int:
    """The paper's word histogram as a PUSH pipeline across the tree: words fanned out to three
    copies of tr, hashed so that each word is counted by one copy of sort | uniq -c, the counts
    fanned back in and sorted. The same pipeline on one machine gives the same lines."""
    corpus = os.path.join(tmp, "corpus")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(corpus, "w") as out:
        for _ in range(20):
            for name in sorted(os.listdir(here)):
                if name.endswith(".py"):
                    with open(os.path.join(here, name)) as f:
                        out.write(f.read())
    env = {**env, "CORPUS": corpus}
    pipeline = ("cat $CORPUS |<[3] tr -cs A-Za-z '\\n' |#[3]| sort | uniq -c >| sort -rn | "
                "head -5")
    print("\n== PUSH: the paper's word histogram, fanned out and hashed across the tree")
    env["PUSH"] = shlex.join(python_argv("brasil.cli.push"))
    failed = sh(f'$PUSH --explain -c "{pipeline}"', env, f'push --explain -c "{pipeline}"')
    failed |= sh(f'$PUSH -c "{pipeline}"', env, f'push -c "{pipeline}"')
    failed |= sh(f'$PUSH --local -c "{pipeline}"', env,
                 f'push --local -c "{pipeline}"   # the same, on this machine alone')
    return failed


def batch_step(root: str, env: dict[str, str], tmp: str) -> int:
    """A batch workload with dependencies on 4 workers, one slowed 10×; then its report."""
    print("\n== Batch: 30 jobs in a DAG on 4 workers, one of them 10x slower")
    try:
        import asyncio

        from .batch.demo import run_batch_demo
        keep = os.path.abspath("demo-output")  # the report's picture outlives the demo
        os.makedirs(keep, exist_ok=True)
        asyncio.run(run_batch_demo(root, env.get("BRASIL_SECRET_FILE"), keep, print))
    except Exception as e:  # noqa: BLE001 - the demo says what failed and goes on to clean up
        print(f"  batch demo failed: {e}")
        return 1
    return 0


def web_step(env: dict[str, str]) -> int:
    """`brasil web` on the demo's tree, looked at by headless Chromium: screenshots of the
    whole tree, of one node drilled into, and of the batch workload's Gantt chart, under
    demo-output/ (look at them)."""
    print("\n== The web dashboard: `brasil web`, screenshots in demo-output/web-*.png")
    if not (os.path.exists("/usr/bin/chromedriver") and os.path.exists("/usr/bin/chromium")):
        print("  skipped: needs Debian's chromium and chromium-driver (make test-deps)")
        return 0
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait
    except ImportError:
        print("  skipped: needs selenium (the test extra: make setup)")
        return 0
    keep = os.path.abspath("demo-output")
    os.makedirs(keep, exist_ok=True)
    web = subprocess.Popen(python_argv("brasil.cli.main", "web"), env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    busy = subprocess.Popen(python_argv("brasil.cli.main", "run", "-n", "3", "sleep", "60"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = None
    try:
        assert web.stdout is not None
        url = web.stdout.readline().strip()
        if not url.startswith("http://"):
            print(f"  brasil web did not start: {web.stderr.read() if web.stderr else ''}")
            return 1
        print(f"$ brasil web\n  {url.split('?')[0]}?token=…")
        o = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                  "--window-size=1400,1500"):
            o.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        driver.get(url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tree .node")) == 4)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sessions tr[data-session]"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#workloads .workload"))
        d = driver
        Select(d.find_element(By.ID, "range")).select_by_value("900")  # the demo's minutes
        d.find_element(By.CSS_SELECTOR, "#workloads .workload button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.gantt rect"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart polyline"))
        shots = []

        def shot(name: str) -> None:  # the whole page: the window as tall as what it holds
            for _ in range(3):
                h = int(d.execute_script("return document.documentElement.scrollHeight"))
                inner = int(d.execute_script("return window.innerHeight"))
                if inner >= h:
                    break
                d.set_window_size(1400, d.get_window_size()["height"] + h - inner + 8)
            path = os.path.join(keep, name)
            d.save_screenshot(path)
            shots.append(path)
        shot("web-tree.png")
        d.find_element(By.CSS_SELECTOR, '#tree .node[data-node="n1"]').click()
        wait.until(lambda d: "n1" in d.find_element(By.ID, "scope-title").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart polyline"))
        shot("web-node.png")
        for path in shots:
            print(f"  screenshot: {path}")
        return 0
    except Exception as e:  # noqa: BLE001 - the demo says what failed and goes on to clean up
        print(f"  web demo failed: {type(e).__name__}: {e}")
        return 1
    finally:
        if driver is not None:
            driver.quit()
        for p in (busy, web):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def brasil(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_argv("brasil.cli.main", *args), env=env,
                          capture_output=True, text=True, timeout=120)


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="brasil-demo-")
    cluster, mnt = os.path.join(tmp, "cluster"), os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    env = dict(os.environ)
    failed = 0
    print(f"Starting a tree of 4 daemons (n0 and its children n1 n2 n3, 2 slots each) in {cluster}")
    t0 = time.monotonic()
    up = brasil("cluster", "up", "--depth", "1", "--fanout", "3", "--slots", "2", "--dir", cluster,
                "--export-root", os.path.join(tmp, "exports"), env=env)
    if up.returncode:
        print(up.stderr, file=sys.stderr)
        return 1
    root = up.stdout.strip()
    env.update(BRASIL=root, BRASIL_SECRET_FILE=os.path.join(cluster, "secret"))
    try:
        print(f"  up in {time.monotonic() - t0:.1f}s; root at {root}")
        m = brasil("mount", mnt, env=env)
        if m.returncode:
            print(m.stderr, file=sys.stderr)
            return 1
        print(f"Mounted it on {mnt}: from here on, only echo and cat\n")
        env["M"] = os.path.join(mnt, "csrv", "local")
        sh("ls $M", env, f"ls {mnt}/csrv/local    # $M below")
        sh("ls $(dirname $M)", env, f"ls {mnt}/csrv          # the children, through the root")
        for title, cmds in STEPS:
            print(f"\n== {title}")
            for cmd in cmds:
                failed |= sh(cmd, env)
        failed |= group_step(env, tmp)
        failed |= push_step(env, tmp)
        failed |= batch_step(root, env, tmp)
        failed |= web_step(env)
    finally:
        print("\nCleaning up")
        brasil("umount", mnt, env=env)
        down = brasil("cluster", "down", "--dir", cluster, env=env)
        print(f"  {down.stderr.strip()}")
        subprocess.run(["rm", "-rf", tmp])
    print("done" if not failed else "done, with errors above")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
