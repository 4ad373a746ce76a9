"""The tree across "hosts": three network namespaces joined by veth through a bridge.

Each daemon listens on its own host's address (not loopback), so the cluster secret is required;
a child joins its parent over that network, and a splice between two children goes straight from
one host to the other. Needs root and iproute2; skipped otherwise. The namespaces, addresses
(10.77.x.y inside them only) and daemons are this test's own, and are removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys

from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from fixtures import date_wc, status_rows, wait_for
from netns_hosts import hosts, needs_netns  # noqa: F401 - hosts: the fixture

pytestmark = needs_netns

L = "csrv/local"


async def test_a_tree_across_three_hosts_with_a_direct_splice(hosts, tmp_path):  # noqa: F811
    names, addrs = hosts
    secret = tmp_path / "secret"
    secret.write_text("a secret shared by three hosts only\n")
    secret.chmod(0o600)
    procs = []

    async def serve(i: int, parent: str | None) -> None:
        argv = ["ip", "netns", "exec", names[i], sys.executable, "-m", "brasil.cli.main", "serve",
                "--name", f"h{i}", "--listen", f"{addrs[i]}:5670",
                "--listen", f"unix:{tmp_path}/h{i}.sock", "--slots", "1",
                "--secret-file", str(secret), "--state-dir", str(tmp_path / f"h{i}")]
        if parent:
            argv += ["--parent", parent]
        procs.append(await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp_path / f"h{i}.log", "wb")))
        await wait_for(lambda: (tmp_path / f"h{i}.sock").exists(), timeout=15)

    try:
        await serve(0, None)
        await serve(1, f"{addrs[0]}:5670")
        await serve(2, f"{addrs[0]}:5670")
        c = await Client.connect(f"unix:{tmp_path}/h0.sock",
                                 auth=client_auth(load_secret(str(secret))))

        async def members() -> list[str]:
            return sorted(ln.split()[0] for ln in (await c.read(f"{L}/status")).decode().splitlines()
                          if not ln.startswith("total"))
        for _ in range(150):
            if await members() == ["h0", "h1", "h2"]:
                break
            await asyncio.sleep(0.1)
        assert await members() == ["h0", "h1", "h2"]
        net = (await c.read("csrv/h1/local/net")).decode()
        assert f"9p {addrs[1]}:5670" in net and f"data {addrs[1]}:" in net
        sid = (await c.read(f"{L}/clone")).decode().strip()
        await c.write(f"{L}/{sid}/ctl", "res 3\n")
        rows = await status_rows(c, sid)
        src = next(r[0] for r in rows if r[1] == "h1")
        dst = next(r[0] for r in rows if r[1] == "h2")
        await c.write(f"{L}/{sid}/{src}/ctl", "exec date\n")
        await c.write(f"{L}/{sid}/{dst}/ctl", "exec wc\n")
        await c.write(f"{L}/{sid}/ctl", f"xsplice {src} {dst}\n")
        assert (await c.read(f"{L}/{sid}/{dst}/stdio")).decode().split() == date_wc()
        assert f"direct to {addrs[2]}:" in (await c.read(f"{L}/{sid}/ctl")).decode()
        await c.close()
        # Without the secret, another host's listener refuses.
        p = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", names[1], sys.executable, "-m", "brasil.cli.main", "cat",
            "--at", f"{addrs[0]}:5670", "/csrv/local/arch",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "BRASIL_SECRET_FILE"})
        out, err = await asyncio.wait_for(p.communicate(), 30)
        assert p.returncode == 1 and b"authentication failed" in err and not out
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
