"""Trees on real hosts (issue 11 §3-4): over ssh into network namespaces, and inside Slurm."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys

import pytest

import services
from brasil.client.run import run
from brasil.ninep.auth import dial
from fixtures import serve_process, wait_for
from helpers import cli

slurm_cluster = services.slurm_cluster
ssh_hosts = services.ssh_hosts


def serving(pattern: str) -> list[str]:
    r = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [ln for ln in r.stdout.splitlines() if "pgrep" not in ln]


async def run_everywhere(root: str, secret: str, **kw) -> dict[int, str]:
    c = await dial(root, secret)
    try:
        out: list[str] = []
        result = await asyncio.wait_for(run(c, "echo $BRASIL_NODE", out=out.append, **kw), 60)
        assert result.status == 0, out
        return {int(line.split(": ")[0].split("/")[1]): line.split(": ")[1] for line in out}
    finally:
        await c.close()


def up(d: str, hosts: list[str], config: str, *more: str) -> subprocess.CompletedProcess[str]:
    return cli("cluster", "up", "--hosts", ",".join(hosts), "--fanout", "2", "--slots", "1",
               "--dir", d, "--ssh-option=-F", f"--ssh-option={config}", *more)


async def test_a_tree_over_ssh_reaches_every_host_and_goes_away(ssh_hosts, tmp_path):
    d = str(tmp_path / "c")
    r = up(d, ssh_hosts.ips, ssh_hosts.config)
    try:
        assert r.returncode == 0, r.stderr
        root = r.stdout.strip()
        assert root == f"{ssh_hosts.ips[0]}:5670"
        secret = f"{d}/secret"
        assert oct(os.stat(secret).st_mode & 0o777) == "0o600"
        nodes = await run_everywhere(root, secret)
        assert sorted(nodes.values()) == sorted(ssh_hosts.ips)  # one rank on each host
        for m in hosts_state(d):  # the secret was installed 0600 on every host, 0700 dir
            got = ssh_hosts.ssh(m["host"], "stat -c '%U %a'", m["dir"], f"{m['dir']}/secret",
                                check=True).stdout
            assert got.split() == ["root", "700", "root", "600"]
    finally:
        down = cli("cluster", "down", "--dir", d)
    assert "stopped 4 daemon(s)" in down.stderr, down.stderr
    assert not serving(f"serve --name {ssh_hosts.subnet}.")


@pytest.mark.parametrize("ssh_hosts", [{"n": 4, "down": [2]}], indirect=True)
async def test_an_unreachable_host_is_reported_and_the_rest_form_the_tree(ssh_hosts, tmp_path):
    d = str(tmp_path / "c")
    r = up(d, ssh_hosts.ips, ssh_hosts.config)
    try:
        assert r.returncode == 0, r.stderr
        assert f"unreachable: {ssh_hosts.ips[2]}:" in r.stderr
        nodes = await run_everywhere(r.stdout.strip(), f"{d}/secret")
        assert sorted(nodes.values()) == sorted(ip for i, ip in enumerate(ssh_hosts.ips)
                                                if i != 2)
    finally:
        cli("cluster", "down", "--dir", d)
    assert not serving(f"serve --name {ssh_hosts.subnet}.")


async def test_srun_brasil_serve_slurm_forms_a_tree_run_reaches_every_task(slurm_cluster,
                                                                            tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a secret for the slurm tree, long enough\n")
    secret.chmod(0o600)
    import socket
    with socket.socket() as s:  # a base port nobody uses; the tasks take it and the next three
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = daemon_cgroups()
    srun = slurm_cluster.srun(["-n", "4", sys.executable, "-m", "brasil.cli.main", "serve",
                               "--slurm", "--fanout", "2", "--port", str(port), "--slots", "1",
                               "--secret-file", str(secret), "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, srun.stdout.readline)
        assert line.startswith("brasil: root at "), (line, srun.stderr.read() if srun.poll() else "")
        root = line.split()[-1]
        from brasil.tree.deploy import wait_joined
        await wait_joined(root, str(secret), 4, lambda m: None)
        nodes = await run_everywhere(root, str(secret), n=4)
        assert sorted(nodes.values()) == [f"{slurm_cluster.node}-{i}" for i in range(4)]
    finally:
        srun.terminate()
        try:
            srun.wait(20)
        except subprocess.TimeoutExpired:
            srun.kill()
            srun.wait()
    # srun stops the step with SIGKILL to every task, watchdogs included: their cgroups stay
    # until the next daemon here removes them.
    left = daemon_cgroups() - before
    async with serve_process(tmp_path):
        await wait_for(lambda: not any(os.path.exists(d) for d in left), timeout=20)


def daemon_cgroups() -> set[str]:
    from brasil.exec.cgroups import _start_cgroup
    start = _start_cgroup()
    return {e.path for e in os.scandir(start) if e.name.startswith("brasil-")} if start else set()


# ---- issue 15 §4: the secret on a host goes only into a private directory of the remote user ----

NOBODY = 65534

PLANT = r"""
import os, struct
# nobody's /tmp/brasil-0 (where a root daemon's files would go), open to all, with a default ACL
# that gives nobody every file made inside it; and a trap directory with a 0666 secret in it.
def default_acl(d):
    u = 0xffffffff
    entries = [(1, 7, u), (2, 7, 65534), (4, 7, u), (0x10, 7, u), (0x20, 7, u)]
    os.setxattr(d, "system.posix_acl_default",
                struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries))
for d in ("/tmp/brasil-0", "/tmp/trap"):
    os.mkdir(d)
    os.chmod(d, 0o777)
    default_acl(d)
with open("/tmp/trap/secret", "w") as f:
    os.fchmod(f.fileno(), 0o666)
os.symlink("/tmp/trap", "/tmp/brasil-0/hosts")
os.symlink("/tmp/trap/secret", "/tmp/brasil-0/secret")
"""

STEAL = ("cat /tmp/trap/secret /tmp/brasil-0/*/secret /tmp/brasil-0/*/*/secret "
         "/tmp/brasil-0/*/*/*/secret 2>/dev/null; true")


def hosts_state(d: str) -> list[dict]:
    import json
    with open(f"{d}/hosts.json") as f:
        return json.load(f)["hosts"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the other user")
@pytest.mark.parametrize("ssh_hosts", [{"n": 4, "private_tmp": True}], indirect=True)
async def test_a_runtime_directory_planted_on_a_host_by_another_user_never_gets_the_secret(
        ssh_hosts, tmp_path):
    victim = ssh_hosts.ips[3]  # a leaf (fanout 2: 0 ← 1, 2; 1 ← 3)
    python = shutil.which("python3", path="/usr/bin:/bin") or pytest.skip("no /usr/bin/python3")
    planted = ssh_hosts.ssh(victim, shlex.join(["runuser", "-u", "nobody", "--", python, "-I",
                                                "-c", PLANT]))
    assert planted.returncode == 0, planted.stderr
    d = str(tmp_path / "c")
    r = up(d, ssh_hosts.ips, ssh_hosts.config)
    try:
        secret = open(f"{d}/secret").read().strip()
        for ip in ssh_hosts.ips:
            stolen = ssh_hosts.ssh(ip, shlex.join(["runuser", "-u", "nobody", "--", "sh", "-c",
                                                     STEAL]))
            assert secret not in stolen.stdout, f"nobody read the cluster secret on {ip}"
        assert r.returncode == 0, r.stderr
        assert f"{victim}: could not start the daemon: " in r.stderr, r.stderr
        assert "/tmp/brasil-0/hosts belongs to nobody" in r.stderr, r.stderr
        nodes = await run_everywhere(r.stdout.strip(), f"{d}/secret")
        assert sorted(nodes.values()) == sorted(ssh_hosts.ips[:3])
        for m in hosts_state(d):  # every secret on a host: a 0600 file in a 0700 directory
            if m["pid"]:
                got = ssh_hosts.ssh(m["host"], "stat -c '%U %a %F'", m["dir"],
                                    f"{m['dir']}/secret", check=True).stdout
                assert got.splitlines() == ["root 700 directory", "root 600 regular file"]
    finally:
        cli("cluster", "down", "--dir", d)
    assert not serving(f"serve --name {ssh_hosts.subnet}.")


async def test_cluster_down_leaves_alone_a_process_that_took_a_recorded_pid(ssh_hosts, tmp_path):
    import json
    d = str(tmp_path / "c")
    r = up(d, ssh_hosts.ips[:2], ssh_hosts.config)
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        assert r.returncode == 0, r.stderr
        with open(f"{d}/hosts.json") as f:
            state = json.load(f)
        state["hosts"][1]["pid"] = bystander.pid  # as if the daemon died and its pid was reused
        with open(f"{d}/hosts.json", "w") as f:
            json.dump(state, f)
        down = cli("cluster", "down", "--dir", d)
        assert bystander.poll() is None, "cluster down killed a process it had not started"
        assert f"{ssh_hosts.ips[1]}: pid {bystander.pid} is not its daemon" in down.stderr
        # the host's own record (serve.pid in its private directory) still stops the daemon
        assert "stopped 2 daemon(s)" in down.stderr, down.stderr
    finally:
        bystander.kill()
        bystander.wait()
    assert not serving(f"serve --name {ssh_hosts.subnet}.")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the other user")
@pytest.mark.parametrize("ssh_hosts", [{"n": 2, "private_tmp": True}], indirect=True)
def test_a_root_host_that_refuses_fails_cluster_up_and_leaves_nothing_running(ssh_hosts,
                                                                               tmp_path):
    python = shutil.which("python3", path="/usr/bin:/bin") or pytest.skip("no /usr/bin/python3")
    planted = ssh_hosts.ssh(ssh_hosts.ips[0], shlex.join(["runuser", "-u", "nobody", "--",
                                                          python, "-I", "-c", PLANT]))
    assert planted.returncode == 0, planted.stderr
    d = str(tmp_path / "c")
    r = up(d, ssh_hosts.ips, ssh_hosts.config)
    assert r.returncode != 0
    assert f"the root, {ssh_hosts.ips[0]}, did not start; nothing is left running" in r.stderr
    assert "/tmp/brasil-0/hosts belongs to nobody" in r.stderr, r.stderr
    assert not serving(f"serve --name {ssh_hosts.subnet}.")
    assert not os.path.exists(f"{d}/hosts.json")
