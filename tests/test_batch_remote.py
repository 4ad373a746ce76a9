"""Workers started elsewhere: on another "host" (a network namespace, with the home hidden from
it, so it can reach the home only through the scheduler node's fs/ over 9P), and by Slurm, as a
job array of `brasil worker`s."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import services
from batch_fixtures import commits_per_job, connect_batch, tree
from brasil.batch.api import Batch
from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from fixtures import spawn_serve, stop, wait_for
from netns_hosts import hosts, needs_netns  # noqa: F401 - hosts: the fixture

slurm_cluster = services.slurm_cluster
BRASIL = [sys.executable, "-m", "brasil.cli.main"]


@needs_netns
async def test_a_worker_on_another_host_reads_and_commits_the_home_over_9p(hosts, tmp_path):  # noqa: F811
    names, addrs = hosts
    secret = tmp_path / "secret"
    secret.write_text("shared by the scheduler and its workers\n")
    secret.chmod(0o600)
    export = tmp_path / "export"
    home = export / "home"
    (home / "in").mkdir(parents=True)
    (home / "in" / "a.txt").write_text("alpha\n")
    (home / "drop.txt").write_text("to be removed\n")
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(
        ["ip", "netns", "exec", names[0], *BRASIL, "serve", "--listen", f"{addrs[0]}:5670",
         "--listen", f"unix:{tmp_path}/s.sock", "--slots", "0", "--secret-file", str(secret),
         "--export", str(export), "--state-dir", str(tmp_path / "state")],
        stdout=log, stderr=log)
    # The worker's host sees the scheduler's network address only, and not the exported tree:
    # a tmpfs covers it in the worker's own mount namespace.
    wlog = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        ["ip", "netns", "exec", names[1], "unshare", "--mount", "--propagation", "private",
         "sh", "-c", 'mount -t tmpfs none "$1" && shift && exec "$@"', "sh", str(export),
         *BRASIL, "worker", "--at", f"{addrs[0]}:5670", "--secret-file", str(secret),
         "--slots", "2", "--remote-homes", "--workdir", str(tmp_path / "worker")],
        stdout=wlog, stderr=wlog)
    try:
        await wait_for(lambda: (tmp_path / "s.sock").exists(), timeout=20)
        b = None
        for _ in range(400):  # the socket is bound before it listens: refused until then
            try:
                b = Batch(await Client.connect(f"unix:{tmp_path}/s.sock",
                                               auth=client_auth(load_secret(str(secret)))))
                await b.state()
                break
            except Exception:  # noqa: BLE001 - not served yet
                if b is not None:
                    await b.close()
                    b = None
                await asyncio.sleep(0.05)
        assert b is not None, open(tmp_path / "serve.log").read()
        # in/a.txt exists on the worker's host only as the copy fetched through fs/
        text = (b"job up isolate -- tr a-z A-Z < in/a.txt > up.txt; rm drop.txt\n"
                b"job plain after:up -- cat up.txt up.txt > twice.txt\n")
        r = await b.submit_stream([text], tag="remote", home=str(home))
        summary = await asyncio.wait_for(b.wait(tag="remote"), 60)
        assert summary["done"] == 2, (await b.jobs("remote"), open(tmp_path / "worker.log").read())
        files = tree(str(home))
        assert files["up.txt"] == "ALPHA\n" and files["twice.txt"] == "ALPHA\nALPHA\n"
        assert "drop.txt" not in files and files["in/a.txt"] == "alpha\n"
        events = await b.events("remote")
        assert {e.kind for e in events} >= {"assign", "start", "finish", "commit"}
        assert sorted(len(v) for v in commits_per_job(events).values()) == [1, 1]
        assert len(r.names) == 2
        await b.close()
    finally:
        for p in (worker, serve):
            p.terminate()
        for p in (worker, serve):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def test_a_slurm_job_array_of_workers_completes_a_workload(slurm_cluster, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    job = None
    try:
        b = await connect_batch(addr)
        r = await b.submit(["sleep 0.3; echo $SLURM_ARRAY_TASK_ID > out.$BRASIL_JOB"] * 12,
                           tag="slurm", home=str(home), isolate=True)
        cmd = " ".join([*BRASIL, "worker", "--at", addr, "--slots", "1", "-q", "--workdir",
                        f"{tmp_path}/w.$SLURM_ARRAY_TASK_ID"])
        job = await asyncio.to_thread(slurm_cluster.sbatch, [
            "--array=1-4", f"--output={tmp_path}/slurm-%a.out", "--wrap", cmd])
        assert (await asyncio.wait_for(b.wait(tag="slurm"), 90))["done"] == 12
        workers = (await b.client.read("csrv/local/batch/workerlist")).decode().splitlines()
        assert len(workers) == 4, workers
        tasks = {(home / f"out.{i}").read_text().strip() for i in r.ids}
        assert tasks <= {"1", "2", "3", "4"} and len(tasks) >= 2
        await b.close()
    finally:
        if job is not None:
            await asyncio.to_thread(slurm_cluster.run, ["scancel", job], check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                    s not in services.TERMINAL_JOB_STATES
                    for s in (await asyncio.to_thread(slurm_cluster.job_states, job)).values()):
                await asyncio.sleep(0.2)
        stop(serve)
