"""Trees on real hosts (issue 11 §3-4): over ssh into network namespaces, and inside Slurm."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

import services
from brasil.group.run import run
from brasil.ninep.auth import dial
from test_cluster import cli

slurm_cluster = services.slurm_cluster
ssh_hosts = services.ssh_hosts


def serving(pattern: str) -> list[str]:
    r = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [ln for ln in r.stdout.splitlines() if "pgrep" not in ln]


async def run_everywhere(root: str, secret: str, **kw) -> dict[int, str]:  # type: ignore[no-untyped-def]
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
        for ip in ssh_hosts.ips:  # the secret was installed 0600 on every host
            mode = ssh_hosts.ssh(ip, "stat -c %a /tmp/brasil-0/c-*/secret", check=True).stdout
            assert set(mode.split()) == {"600"}
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
