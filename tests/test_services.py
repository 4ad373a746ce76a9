"""The real-service fixtures of services.py are real: Slurm runs jobs, PostgreSQL stores rows, the
ssh hosts are separate network hosts; and each leaves nothing behind when stopped."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import pytest

import services
from services import ServiceUnavailable, SlurmCluster, SshHosts

slurm_cluster = services.slurm_cluster
postgres_url = services.postgres_url
ssh_hosts = services.ssh_hosts


def live(pid: int) -> bool:
    """The process exists and is not a zombie (reaping orphans is init's business)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def live_with_env(entry: str) -> list[int]:
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if entry.encode() in f.read().split(b"\0") and live(int(p)):
                    found.append(int(p))
        except OSError:
            pass
    return found


def started(cm):
    """Enter a start_* context manager, skipping where the service cannot exist."""
    try:
        return cm.__enter__()
    except ServiceUnavailable as e:
        pytest.skip(str(e))


# -- Slurm ---------------------------------------------------------------------------------------


def test_slurm_array(slurm_cluster: SlurmCluster, tmp_path: pathlib.Path) -> None:
    job = slurm_cluster.sbatch(["--array=1-4", "--output=/dev/null", "--wrap",
                                f"echo $SLURM_ARRAY_TASK_ID > {tmp_path}/out.$SLURM_ARRAY_TASK_ID"])
    states = slurm_cluster.wait_job(job, timeout=60)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(1, 5)}
    for i in range(1, 5):
        assert (tmp_path / f"out.{i}").read_text() == f"{i}\n"


def barrier(directory: str, rank: str, n: int = 4) -> str:
    """Shell: mark this task present, then wait (30 s at most) until all n are: fails unless the
    n tasks run at the same time."""
    return (f"touch {directory}/here.{rank}; i=0; "
            f"until [ $(ls {directory} | grep -c '^here[.]') -ge {n} ]; do "
            f"i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.1; done")


def test_slurm_array_tasks_run_at_once(slurm_cluster: SlurmCluster,
                                       tmp_path: pathlib.Path) -> None:
    job = slurm_cluster.sbatch(["--array=1-4", "--output=/dev/null", "--wrap",
                                barrier(str(tmp_path), "$SLURM_ARRAY_TASK_ID")])
    assert set(slurm_cluster.wait_job(job, timeout=60).values()) == {"COMPLETED"}


def test_srun_four_tasks(slurm_cluster: SlurmCluster) -> None:
    p = slurm_cluster.srun(["-n", "4", "printenv", "SLURM_PROCID"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert sorted(out.split()) == ["0", "1", "2", "3"]


def test_srun_tasks_run_at_once(slurm_cluster: SlurmCluster, tmp_path: pathlib.Path) -> None:
    p = slurm_cluster.srun(["-n", "4", "sh", "-c",
                            barrier(str(tmp_path), "$SLURM_PROCID") + "; echo $SLURM_PROCID"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert sorted(out.split()) == ["0", "1", "2", "3"]


def test_slurm_stop_leaves_nothing() -> None:
    cm = services.start_slurm(cpus=2)
    cluster = started(cm)
    try:
        pids = [p.pid for p in cluster._procs.values()]
        marked = cluster.sbatch(["--output=/dev/null", "--wrap", "sleep 1000"])
        # Without our environment (so without the marker stop() sweeps by): scancel ends it.
        pidfile = os.path.join(cluster.dir, "jobs", "unmarked.pid")
        unmarked = cluster.sbatch(["--export=NONE", "--output=/dev/null", "--wrap",
                                   f"echo $$ > {pidfile}; exec sleep 1000"])
        deadline = time.monotonic() + 30
        while not (os.path.exists(pidfile) and cluster.job_states(marked) == {marked: "RUNNING"}):
            assert time.monotonic() < deadline, cluster.job_states(marked)
            time.sleep(0.05)
        assert cluster.job_states(unmarked) == {unmarked: "RUNNING"}
        with open(pidfile) as f:
            sleeper = int(f.read())
        assert live(sleeper)
        marker = f"BRASIL_SLURM_CLUSTER={cluster.dir}"
        assert live_with_env(marker)  # slurmstepd and the marked sleep, at least
    finally:
        cm.__exit__(None, None, None)
    assert not [p for p in pids if live(p)]
    assert not live_with_env(marker)
    assert not live(sleeper)
    assert not os.path.exists(cluster.dir)


# -- PostgreSQL ----------------------------------------------------------------------------------


def test_postgres(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, name text)")
        conn.execute("TRUNCATE t")
        conn.execute("INSERT INTO t (name) VALUES (%s), (%s)", ("brasil", "slurm"))
        assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [("brasil",),
                                                                             ("slurm",)]
        assert conn.execute("SELECT current_database()").fetchone() == ("brasil",)
        # Unix socket only: no TCP listener at all.
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)


def test_postgres_stop_leaves_nothing() -> None:
    cm = services.start_postgres()
    server = started(cm)
    try:
        with open(os.path.join(server.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        assert live(postmaster)
        assert server.psql("SELECT 1") == "1\n"
    finally:
        cm.__exit__(None, None, None)
    assert not live(postmaster)
    assert not os.path.exists(server.dir)


# -- ssh hosts -----------------------------------------------------------------------------------


def test_ssh_hosts_are_separate_hosts(ssh_hosts: SshHosts) -> None:
    assert len(ssh_hosts.ips) == 4
    for i, ip in enumerate(ssh_hosts.ips):
        r = ssh_hosts.ssh(ip, "hostname; ip -4 -o addr show")
        assert r.returncode == 0, r.stderr
        name, addrs = r.stdout.split("\n", 1)
        assert name == ssh_hosts.hostnames[i]
        assert f"inet {ip}/24" in addrs
        assert not [other for other in ssh_hosts.ips if other != ip and f"inet {other}/" in addrs]
    # The plain `ssh -F CONFIG IP` form works too, and run() is inside the namespace.
    ip = ssh_hosts.ips[1]
    out = subprocess.run(["ssh", "-F", ssh_hosts.config, ip, "cat /proc/net/dev"],
                         check=False, capture_output=True, text=True, timeout=30).stdout
    assert "eth0:" in out
    assert ip in ssh_hosts.run(1, ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout


def test_ssh_hosts_reach_each_other(ssh_hosts: SshHosts) -> None:
    hop = f"ssh -F {ssh_hosts.config} {ssh_hosts.ips[3]} hostname"
    r = ssh_hosts.ssh(0, hop)
    assert (r.returncode, r.stdout) == (0, "h3\n"), r.stderr


@pytest.mark.parametrize("ssh_hosts", [{"n": 2, "down": [1]}], indirect=True)
def test_ssh_unreachable_hosts_fail_fast(ssh_hosts: SshHosts) -> None:
    fast = ["-o", "ConnectTimeout=2"]

    def attempt(host):
        t = time.monotonic()
        r = ssh_hosts.ssh(host, "true", options=fast)
        return r.returncode, time.monotonic() - t

    rc, took = attempt(1)  # no sshd: refused at once
    assert rc == 255 and took < 2
    # Nobody at that address, and a host whose link is down: both time out (tried at once).
    ssh_hosts.disconnect(0)
    t = time.monotonic()
    tries = [subprocess.Popen(ssh_hosts.ssh_argv(host, "true", options=fast),
                              stderr=subprocess.PIPE, text=True)
             for host in (ssh_hosts.unreachable_ip, 0)]
    for p in tries:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 255 and "timed out" in err, err
    assert time.monotonic() - t < 5
    ssh_hosts.reconnect(0)
    assert attempt(0)[0] == 0
    ssh_hosts.start_sshd(1)
    assert attempt(1)[0] == 0


def test_ssh_hosts_stop_leaves_nothing() -> None:
    cm = services.start_ssh_hosts(2)
    hosts = started(cm)
    try:
        r = hosts.ssh(0, "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!")
        sleeper = int(r.stdout)
        sshd = [p.pid for p in hosts._sshd.values()]
        assert live(sleeper) and all(map(live, sshd))
    finally:
        cm.__exit__(None, None, None)
    assert not live(sleeper) and not any(map(live, sshd))
    namespaces = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True,
                                text=True).stdout
    assert not [ns for ns in hosts.namespaces if ns in namespaces]
    links = subprocess.run(["ip", "-o", "link"], check=False, capture_output=True,
                           text=True).stdout
    assert hosts.bridge not in links
    assert not os.path.exists(hosts.dir)
