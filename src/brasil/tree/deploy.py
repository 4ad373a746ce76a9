"""Trees on real hosts: over ssh (``cluster up --hosts NODESET``) and inside Slurm (``--slurm``).

Both shape the tree k-ary (Flux's ``kary:32`` by default): host i's parent is host (i-1)//k, and
every child dials its parent, so nothing needs to reach a child. The cluster secret is generated
here and installed on every host with mode 0600 before any daemon starts; each daemon listens on
its host's own address (the name or address it was given), with the secret required.

Over ssh, the hosts are probed first (in parallel, each with a short connect timeout): any that
cannot be reached is reported, by host, with ssh's reason, and the tree is shaped from the rest.
The local cluster directory keeps what ``cluster down`` needs: each host, its daemon's pid and
its directory there.

On each host, brasil itself does the host's part (:func:`host_up`, :func:`host_down`, run over ssh
as ``python -I -m brasil.cli.main cluster host-up|host-down``), never shell text: the secret arrives
on stdin and is written into a private directory of the *remote* user's
(``/tmp/brasil-UID/hosts/ID`` with the remote UID: made 0700 in one ``mkdir``, refused when someone
else made it or can enter it, the file written ``O_EXCL | O_NOFOLLOW`` and renamed into place), read
back through the same checks (ours, 0600, not a link) before the daemon starts; ``host-down``
signals a recorded pid only while it is still that daemon.

Under Slurm, each task of ``srun brasil serve --slurm`` works out its place from the environment
(``SLURM_PROCID``, ``SLURM_STEP_NODELIST``, ``SLURM_STEP_TASKS_PER_NODE``, ``SLURM_LOCALID``):
its node, its name (the node's name, with ``-LOCALID`` when a node runs several tasks), its
port (the base port plus ``SLURM_LOCALID``) and its parent's; task 0, the root, prints its address.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from ..exec import pidcheck
from ..exec.pychild import python_argv
from ..ninep.auth import client_auth, load_secret, make_secret
from ..ninep.client import Client
from ..ninep.private import (
    UnsafePathError,
    check_private_dir,
    open_private,
    private_dir,
    read_private,
    write_private,
)
from ..ninep.transport import tmp_dir
from .cluster import Progress

DEFAULT_FANOUT = 32
DEFAULT_PORT = 5670
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


class DeployError(Exception):
    pass


def parent_index(i: int, fanout: int) -> int | None:
    return None if i == 0 else (i - 1) // fanout


def expand(nodeset: str) -> list[str]:
    from ClusterShell.NodeSet import NodeSet, NodeSetParseError
    try:
        return list(NodeSet(nodeset))
    except NodeSetParseError as e:
        raise DeployError(f"--hosts {nodeset!r}: {e}") from None


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---- ssh ----

@dataclass
class SshHost:
    host: str
    pid: int = 0
    dir: str = ""
    parent: str | None = None


async def _ssh(host: str, command: str, ssh: list[str], stdin: bytes | None = None,
               timeout: float = 30) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        *ssh, host, command, stdin=asyncio.subprocess.PIPE if stdin is not None
        else asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(p.communicate(stdin), timeout)
    except TimeoutError:
        p.kill()
        await p.wait()
        return 255, "", f"no answer within {timeout:g}s"
    return p.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _reason(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "ssh failed"


async def ssh_up(dirpath: str, hosts: list[str], *, fanout: int = DEFAULT_FANOUT,
                 slots: int | None = None, port: int = DEFAULT_PORT, python: str | None = None,
                 ssh: list[str] | None = None, export: str | None = None,
                 progress: Progress = print) -> tuple[str, list[str]]:
    """Start the tree; returns the root's address and the hosts that could not be reached."""
    ssh = ["ssh", *SSH_OPTIONS, *(ssh or [])]
    dirpath = private_dir(dirpath, "cluster directory")
    if os.path.exists(os.path.join(dirpath, "hosts.json")):  # noqa: ASYNC240 - local, nothing runs yet
        raise DeployError(f"{dirpath} already has a cluster; `brasil cluster down --dir "
                          f"{dirpath}` first")
    t0 = time.monotonic()
    probes = await asyncio.gather(*(_ssh(h, "true", ssh, timeout=15) for h in hosts))
    unreachable = [f"{h}: {_reason(err)}" for h, (rc, _, err) in zip(hosts, probes) if rc]
    live = [h for h, (rc, _, _) in zip(hosts, probes) if rc == 0]
    for line in unreachable:
        progress(f"unreachable: {line}")
    if not live:
        raise DeployError("no host could be reached; nothing was started")
    secret = make_secret()
    write_private(os.path.join(dirpath, "secret"), secret)
    cluster_id = os.path.basename(dirpath.rstrip("/")) + "-" + secrets.token_hex(3)
    parents = [parent_index(i, fanout) for i in range(len(live))]
    members = [SshHost(h, parent=None if p is None else address(live[p], port))
               for h, p in zip(live, parents)]

    async def start(i: int, m: SshHost) -> str:
        serve = ["--name", m.host, "--listen", address(m.host, port)] \
            + (["--slots", str(slots)] if slots is not None else []) \
            + (["--parent", m.parent] if m.parent else []) \
            + (["--export", export] if export else [])
        command = shlex.join(python_argv("brasil.cli.main", "cluster", "host-up",
                                         f"{cluster_id}-{i}", "--", *serve, python=python))
        rc, out, err = await _ssh(m.host, command, ssh, stdin=secret.encode())
        try:
            got = json.loads(out) if rc == 0 else {}  # no answer: a KeyError, as a bad one
            m.pid, m.dir = int(got["pid"]), str(got["dir"])
        except (ValueError, TypeError, KeyError):
            return f"{m.host}: could not start the daemon: {_reason(err or out)}"
        return ""
    failed = [f for f in await asyncio.gather(*(start(i, m) for i, m in enumerate(members)))
              if f]
    state = {"hosts": [m.__dict__ for m in members], "ssh": ssh, "port": port,
             "python": python}
    write_private(os.path.join(dirpath, "hosts.json"), json.dumps(state, indent=1))
    for f in failed:
        progress(f)
    if not members[0].pid:
        await ssh_down(dirpath, progress)
        raise DeployError(f"the root, {members[0].host}, did not start; nothing is left running")
    root = address(live[0], port)
    await wait_joined(root, os.path.join(dirpath, "secret"), len(members) - len(failed), progress)
    progress(f"tree of {len(members) - len(failed)} daemon(s) up in {time.monotonic() - t0:.1f}s "
             f"(fanout {fanout})")
    return root, unreachable + failed


# ---- a host's part, run there by brasil itself ----

HOST_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_SECRET = 4096


def host_dir(cluster_id: str) -> str:
    """This user's private directory for the daemon ``cluster_id``: ``/tmp/brasil-UID/hosts/ID``
    (not under ``$XDG_RUNTIME_DIR``: the daemon outlives the ssh session that starts it)."""
    if not HOST_ID.fullmatch(cluster_id) or cluster_id in (".", ".."):
        raise DeployError(f"bad cluster id {cluster_id!r}: letters, digits, '_', '.', '-'")
    return os.path.join(tmp_dir(), "hosts", cluster_id)


def _serve_identity(d: str) -> list[str]:
    """The words only this host's daemon has on its command line: its state directory."""
    return ["--state-dir", os.path.join(d, "state")]


def host_up(cluster_id: str, serve_args: list[str], secret: bytes) -> dict[str, object]:
    """Install ``secret`` privately and start ``brasil serve`` with it, in the background;
    returns its pid and directory. Refuses a directory someone else made or can enter."""
    if not 16 <= len(secret.strip()) <= MAX_SECRET:
        raise DeployError("the secret on stdin must hold 16 to 4096 bytes")
    try:
        d = private_dir(host_dir(cluster_id), "cluster host directory")
        pid_file = os.path.join(d, "serve.pid")
        if os.path.exists(pid_file):
            raise DeployError(f"{d} already has a daemon; stop it first")
        secret_file = os.path.join(d, "secret")
        write_private(secret_file, secret)
        if read_private(secret_file, "secret file") != secret:  # ours, 0600, not a link
            raise DeployError(f"{secret_file} changed as it was written; not starting")
        state = private_dir(os.path.join(d, "state"), "state directory")
        log = open_private(os.path.join(d, "serve.log"))
    except UnsafePathError as e:
        raise DeployError(str(e)) from None
    try:
        argv = python_argv("brasil.cli.main", "serve", *serve_args, "--secret-file",
                           secret_file, *_serve_identity(d), "-q")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=state, start_new_session=True)
    finally:
        os.close(log)
    write_private(pid_file, f"{proc.pid}\n")
    return {"pid": proc.pid, "dir": d}


def host_down(d: str, pid: int) -> dict[str, object]:
    """Stop the daemon :func:`host_up` started in ``d`` and remove ``d``. The pid recorded by
    ``cluster up`` and the one in ``d/serve.pid`` are each signalled only while they are still
    that daemon; returns how many were stopped and why the others were left alone."""
    if os.path.dirname(os.path.abspath(d)) != os.path.join(tmp_dir(), "hosts"):
        raise DeployError(f"{d} is not a cluster host directory of this user's")
    try:
        check_private_dir(d, "cluster host directory")
        pids = {pid, int(read_private(os.path.join(d, "serve.pid"), "pid file").strip() or 0)}
    except FileNotFoundError:
        return {"stopped": 0, "left": []}
    except (UnsafePathError, ValueError) as e:
        raise DeployError(str(e)) from None
    claimed, left = [], []
    for p in sorted(pids):
        fd, why = pidcheck.claim(p, _serve_identity(d))
        if fd is not None:
            claimed.append(fd)
        elif why != "no such process":
            left.append(f"pid {p} is not its daemon any more ({why}); left alone")
    pidcheck.stop(claimed)
    shutil.rmtree(d, ignore_errors=True)
    return {"stopped": len(claimed), "left": left}


async def wait_joined(root: str, secret_file: str, n: int, progress: Progress,
                      timeout: float = 60) -> None:
    """Until the root's status lists ``n`` nodes."""
    deadline = time.monotonic() + timeout
    auth = client_auth(load_secret(secret_file))
    last = 0
    while True:
        try:
            c = await Client.connect(root, auth=auth, timeout=5)
            try:
                lines = (await c.read("csrv/local/status")).decode().splitlines()
            finally:
                await c.close()
            last = len(lines) - 1
            if last >= n:
                progress(f"all {n} daemon(s) joined")
                return
        except (OSError, ConnectionError, Exception) as e:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise DeployError(f"the root at {root} did not come up: {e}") from None
        if time.monotonic() > deadline:
            raise DeployError(f"only {last} of {n} daemons joined the root at {root}")
        await asyncio.sleep(0.2)


async def ssh_down(dirpath: str, progress: Progress = print) -> int:
    """Stop the daemons of hosts.json through each host's ``cluster host-down``; how many
    were stopped."""
    with open(os.path.join(dirpath, "hosts.json")) as f:  # noqa: ASYNC230 - small, local
        state = json.load(f)
    ssh = state["ssh"]

    async def stop(m: dict[str, Any]) -> bool:
        if not m.get("pid"):
            return False
        command = shlex.join(python_argv("brasil.cli.main", "cluster", "host-down", m["dir"],
                                         str(m["pid"]), python=state.get("python")))
        rc, out, err = await _ssh(m["host"], command, ssh)
        try:
            got = json.loads(out) if rc == 0 else {}  # no answer: a KeyError, as a bad one
            stopped, left = int(got["stopped"]), [str(w) for w in got["left"]]
        except (ValueError, TypeError, KeyError):
            progress(f"{m['host']}: could not stop the daemon: {_reason(err or out)}")
            return False
        for why in left:
            progress(f"{m['host']}: {why}")
        return stopped > 0
    stopped = await asyncio.gather(*(stop(m) for m in state["hosts"]))
    os.unlink(os.path.join(dirpath, "hosts.json"))
    return sum(stopped)


# ---- Slurm ----

def tasks_per_node(text: str) -> list[int]:
    """``SLURM_STEP_TASKS_PER_NODE``: ``2(x3),1`` → [2, 2, 2, 1]."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise DeployError(f"cannot read SLURM_STEP_TASKS_PER_NODE {text!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


@dataclass
class SlurmPlace:
    name: str
    listen: str
    parent: str | None
    root: bool


def slurm_place(env: dict[str, str], fanout: int = DEFAULT_FANOUT,
                port: int = DEFAULT_PORT) -> SlurmPlace:
    """This task's place in the tree, from Slurm's environment (block task distribution)."""
    try:
        rank = int(env["SLURM_PROCID"])
        nodes = expand(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
        per = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE")
                             or env["SLURM_TASKS_PER_NODE"])
    except KeyError as e:
        raise DeployError(f"--slurm: {e.args[0]} is not set; run under srun (srun brasil serve "
                          "--slurm …)") from None
    layout: list[tuple[str, int]] = []  # task -> (node, local id)
    for node, k in zip(nodes, per):
        layout += [(node, i) for i in range(k)]
    if rank >= len(layout):
        raise DeployError(f"--slurm: task {rank} but the step lists {len(layout)} task(s)")

    def name(t: int) -> str:
        node, local = layout[t]
        return node if per[nodes.index(node)] == 1 else f"{node}-{local}"

    def addr(t: int) -> str:
        node, local = layout[t]
        return address(node, port + local)
    p = parent_index(rank, fanout)
    return SlurmPlace(name(rank), addr(rank), None if p is None else addr(p), rank == 0)


async def slurm_up(dirpath: str, *, fanout: int = DEFAULT_FANOUT, slots: int | None = None,
                   port: int = DEFAULT_PORT, export: str | None = None,
                   progress: Progress = print) -> str:
    """Inside an allocation: ``srun`` one daemon per task, in the background; the root's
    address once every task has joined. The directory must be one every node can read (the
    secret is there, and the tasks run from it): the default is under the home directory."""
    if "SLURM_JOB_ID" not in os.environ:
        raise DeployError("--slurm: not inside a Slurm allocation (SLURM_JOB_ID is not set); "
                          "run it under salloc or sbatch")
    dirpath = private_dir(dirpath, "cluster directory")
    secret = os.path.join(dirpath, "secret")
    write_private(secret, make_secret())
    argv = ["srun", "--kill-on-bad-exit=0", "--chdir", dirpath, *python_argv(
        "brasil.cli.main", "serve", "--slurm", "--fanout", str(fanout), "--port", str(port),
        *_srun_identity(dirpath), "-q")] + (["--slots", str(slots)] if slots is not None else []) \
        + (["--export", export] if export else [])
    log = os.path.join(dirpath, "srun.log")
    # Blocking, but nothing else runs on this command's loop yet: one local open, one fork.
    with open(log, "ab") as out:  # noqa: ASYNC230
        p = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,  # noqa: ASYNC220
                             cwd=dirpath, start_new_session=True)
    write_private(os.path.join(dirpath, "srun.pid"), f"{p.pid}\n")
    deadline = time.monotonic() + 60
    root = None
    while root is None:
        with open(log) as f:  # noqa: ASYNC230 - a small local log
            m = re.search(r"brasil: root at (\S+)", f.read())
        if m:
            root = m.group(1)
        elif p.poll() is not None or time.monotonic() > deadline:
            raise DeployError(f"srun did not start the root; see {log}")
        else:
            await asyncio.sleep(0.1)
    ntasks = int(os.environ.get("SLURM_NTASKS", "0") or 0)
    if ntasks:
        await wait_joined(root, secret, ntasks, progress)
    return root


def _srun_identity(dirpath: str) -> list[str]:
    """The words only this cluster's srun has on its command line: its secret file."""
    return ["--secret-file", os.path.join(dirpath, "secret")]


def slurm_down(dirpath: str, progress: Progress = print) -> int:
    """SIGTERM the srun `slurm_up` started (it passes it on to every task), if it still is it."""
    dirpath = os.path.abspath(dirpath)
    with open(os.path.join(dirpath, "srun.pid")) as f:
        pid = int(f.read().strip())
    fd, why = pidcheck.claim(pid, ["srun"], _srun_identity(dirpath))
    if fd is not None:
        pidcheck.stop([fd], grace=30)
    elif why != "no such process":
        progress(f"srun: pid {pid} is not the srun that started the tree any more ({why}); "
                 "left alone")
    os.unlink(os.path.join(dirpath, "srun.pid"))
    return 1 if fd is not None else 0
