"""Issue 15 §6, §7, §12–§15: the batch layer under attack by another local user or a careless
or hostile client holding the secret.

§6  a SQLite database (or its -wal/-shm, or its directory) planted by `nobody` is refused;
§7  a PostgreSQL password on the command line is refused, with the alternatives named;
§12 submissions are capped, and a large one does not stall the daemon's other clients;
§13 a NUL in a command is refused at submission, and a job that cannot start fails and frees
    its slot;
§14 numbers out of range are refused with a sentence, and doing it many times costs the log
    a few lines;
§15 a scheduler stopped longer than the lease does not blame the worker it could not hear.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from brasil.batch import ops
from brasil.batch.jobfile import Defaults
from brasil.ninep.errors import NinepError
from fixtures import wait_for
from test_batch_fixtures import (connect_batch, scheduler, spawn_serve, spawn_worker, stop,
                                 workers)

NOBODY = 65534
WAIT = 30


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user (nobody)")


def brasil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


# ---- §13: NUL -------------------------------------------------------------------------------------

async def test_a_nul_in_a_command_is_refused_at_submission(tmp_path):
    async with scheduler(str(tmp_path)) as (_, _, b):
        with pytest.raises(NinepError, match="NUL"):
            await b.submit_stream([b"echo a\x00b\n"], home=str(tmp_path))
        with pytest.raises(NinepError, match="NUL"):
            await b.submit_stream([b"job x -- echo a\x00b\n"], home=str(tmp_path))
        with pytest.raises(ValueError, match="NUL"):  # the API says so before sending
            await b.submit(["echo a\x00b"], home=str(tmp_path))
        assert (await b.summary())["total"] == 0


async def test_a_job_that_cannot_start_fails_with_the_reason_and_frees_its_slot(tmp_path):
    async with scheduler(str(tmp_path)) as (d, s, b):
        # As if submitted before submission refused NUL: straight into the database.
        bad = Defaults(home=str(tmp_path), retries=0, tag="t").spec("echo a\x00b", 1)
        now = time.time()
        await s.write(lambda tx: ops.submit(tx, [bad], now))
        async with workers(d.unix, str(tmp_path), n=1, slots=1):
            (job,) = await b.jobs("t")
            await asyncio.wait_for(b.wait(ids=[job.id]), WAIT)
            job = await b.job(job.id)
            assert job.state == "failed" and "null byte" in job.reason, job
            ok = await b.submit(["true"], tag="after", home=str(tmp_path))  # the slot is free
            assert (await asyncio.wait_for(b.wait(ids=ok.ids), WAIT))["done"] == 1


# ---- §14: numbers out of range, and the log ---------------------------------------------------------

BAD_NUMBERS = [
    ("job a priority:99999999999999999999999 -- true\n", "priority must be between"),
    ("%set priority -99999999999999999999999\ntrue\n", "priority must be between"),
    ("job a retries:99999999999999999999999 -- true\n", "retries must be between"),
    ("job a redundancy:99999999999999999999999 -- true\n", "redundancy must be between"),
    ("job a after:99999999999999999999999 -- true\n", "job ids"),
    ("%set after 99999999999999999999999\ntrue\n", "job ids"),
]


@pytest.mark.parametrize("text,sentence", BAD_NUMBERS)
async def test_a_number_out_of_range_is_refused_with_a_sentence(tmp_path, text, sentence):
    async with scheduler(str(tmp_path)) as (_, _, b):
        with pytest.raises(NinepError, match=sentence):
            await b.submit_stream([text.encode()], home=str(tmp_path))
        assert (await b.summary())["total"] == 0


def log_lines(path: str) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


async def test_many_bad_numbers_cost_the_log_a_few_lines(tmp_path):
    serve, addr = spawn_serve(str(tmp_path))
    log = os.path.join(str(tmp_path), "sched.log")
    try:
        b = await connect_batch(addr)
        await b.client.write("csrv/local/batch/ctl", "worker w 1\n")
        before = log_lines(log)
        for i in range(60):
            with pytest.raises(NinepError, match="priority must be between"):
                await b.submit_stream([BAD_NUMBERS[0][0].encode()], home=str(tmp_path))
            with pytest.raises(NinepError, match="job ids"):
                await b.cancel([10 ** 25])
            with pytest.raises(NinepError, match="bad report"):
                await b.client.write("csrv/local/batch/workers/w/ctl",
                                     f"start {10 ** 25} 0 0\n")
        grew = log_lines(log) - before
        assert grew <= 10, open(log).read()[-3000:]
        assert (await b.summary())["total"] == 0  # and the daemon is fine
        await b.close()
    finally:
        stop(serve)
