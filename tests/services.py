"""Real services for tests: a single-node Slurm, a PostgreSQL server, sshd "hosts" in namespaces.

Each service is a plain (synchronous) context manager that starts real daemons in a temporary
directory and, on exit — also when the body raises — stops every process it started and removes
what it made. Their helpers block; from an async test call them through `asyncio.to_thread`.

    start_slurm(cpus=8)      -> SlurmCluster    munged + slurmctld + slurmd on 127.0.0.1
    start_postgres()         -> PostgresServer  postgres on a Unix socket only, database `brasil`
    start_ssh_hosts(n=4)     -> SshHosts        n network namespaces on a bridge, one sshd each

The pytest fixtures wrapping them (name them in a test module, e.g.
`slurm_cluster = services.slurm_cluster` after `import services`; an assignment rather than
`from services import slurm_cluster`, which linters flag as redefined by the test's argument):

    slurm_cluster     one cluster for the whole session, however many modules import it
    postgres_server   one server for the whole session (make a fresh database per test with
                      `postgres_server.create_database(name)`); postgres_url: its URL
    ssh_hosts         fresh hosts per test; n=4 unless parametrized indirectly:
                      @pytest.mark.parametrize("ssh_hosts", [2], indirect=True)
                      @pytest.mark.parametrize("ssh_hosts", [{"n": 3, "down": [2]}], indirect=True)

When a service cannot exist here — its Debian package is not installed (`sh scripts/test-deps.sh`
installs them), or it needs root — the context manager raises ServiceUnavailable and the fixture
skips with that message. Any other failure to start is an error, with the daemons' log tails.
Nothing happens at import.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest

INSTALL_HINT = "install with: sh scripts/test-deps.sh (as root)"


class ServiceUnavailable(Exception):
    """The service cannot run on this machine (missing package, not root); tests should skip."""


# -- small helpers -------------------------------------------------------------------------------


def _project_dirs() -> list[str]:
    """This checkout and the virtualenv whose python runs the tests: what a host must see."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv = os.path.realpath(os.path.dirname(os.path.dirname(sys.executable)))
    dirs = sorted({root, venv})
    return [d for d in dirs if not any(d.startswith(o + "/") for o in dirs)]


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ServiceUnavailable(f"{what} needs root")


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
         if os.access(p := os.path.join(d, name), os.X_OK)), None)
    if path is None:
        raise ServiceUnavailable(f"`{name}` not found (Debian package {package}); {INSTALL_HINT}")
    return path


def _run(argv: Sequence[str], timeout: float = 30, check: bool = True,
         **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), check=False, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        detail = r.stderr.strip() or r.stdout
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {detail}")
    return r


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read().splitlines()[-lines:]
    except OSError:
        return ""
    return f"--- {path}:\n" + "\n".join(text) if text else ""


def _wait(cond: Callable[[], Any], timeout: float, what: str,
          watch: Iterable[tuple[str, subprocess.Popen[Any]]] = (),
          logs: Iterable[str] = ()) -> Any:
    """Poll `cond` until it returns something true; fail early if a watched process exits."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    watch, logs = list(watch), list(logs)
    while True:
        result = cond()
        if result:
            return result
        for name, proc in watch:
            if proc.poll() is not None:
                tails = "\n".join(filter(None, map(_tail, logs)))
                raise RuntimeError(f"{what}: {name} exited with {proc.returncode}\n{tails}")
        if time.monotonic() > deadline:
            tails = "\n".join(filter(None, map(_tail, logs)))
            raise TimeoutError(f"{what}: not ready after {timeout}s\n{tails}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _stop(proc: subprocess.Popen[Any] | None, timeout: float = 5) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _kill_until_gone(find: Callable[[], set[int]], timeout: float = 10) -> None:
    """SIGKILL what `find` returns (never this process) until it returns nothing."""
    deadline = time.monotonic() + timeout
    while pids := find() - {os.getpid()}:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes survive SIGKILL: {sorted(pids)}")
        time.sleep(0.01)


def _pids_with_env(entry: bytes) -> set[int]:
    found = set()
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if entry in f.read().split(b"\0"):
                    found.add(pid)
        except OSError:
            pass
    return found


# -- Slurm ---------------------------------------------------------------------------------------

TERMINAL_JOB_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                       "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}


@dataclasses.dataclass
class SlurmCluster:
    """A running single-node Slurm. `env` is a complete environment for Slurm commands and jobs
    (os.environ without SLURM_*, plus `extra_env`: SLURM_CONF and a marker that lets stop() find
    every process of this cluster's jobs)."""

    dir: str
    conf: str
    node: str
    cpus: int
    env: dict[str, str]
    extra_env: dict[str, str]
    _procs: dict[str, subprocess.Popen[Any]] = dataclasses.field(default_factory=dict, repr=False)
    _stopped: bool = dataclasses.field(default=False, repr=False)

    def run(self, args: Sequence[str], timeout: float = 30, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run any Slurm command (`["sinfo"]`, `["scancel", id]`…) against this cluster."""
        kw.setdefault("cwd", os.path.join(self.dir, "jobs"))
        return _run(args, timeout=timeout, check=check, env=self._env(kw.pop("env", None)), **kw)

    def sbatch(self, args: Sequence[str], **kw: Any) -> str:
        """`sbatch --parsable ARGS`; returns the job id (e.g. "7"). Runs in DIR/jobs unless cwd=
        is given, so default slurm-%j.out files land there."""
        out = self.run(["sbatch", "--parsable", *args], **kw).stdout.strip()
        return out.split(";")[0]

    def srun(self, args: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start `srun ARGS` and return its Popen (env= given is laid over self.env)."""
        popen_kw["env"] = self._env(popen_kw.get("env"))
        popen_kw.setdefault("cwd", os.path.join(self.dir, "jobs"))
        return subprocess.Popen(["srun", *args], **popen_kw)

    def job_states(self, job_id: str) -> dict[str, str]:
        """{"7": "RUNNING"} or, for an array, {"7_1": "COMPLETED", "7_2-4": "PENDING", …}."""
        out = self.run(["scontrol", "-o", "show", "job", str(job_id)]).stdout
        states = {}
        for line in out.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            task = f.get("ArrayTaskId")
            key = f"{f['ArrayJobId']}_{task}" if task else f["JobId"]
            states[key] = f["JobState"]
        return states

    def wait_job(self, job_id: str, timeout: float = 60) -> dict[str, str]:
        """Wait until the job (every task of an array) has ended; returns job_states()."""
        last: dict[str, str] = {}

        def done() -> bool:
            nonlocal last
            last = self.job_states(job_id)
            return bool(last) and all(s in TERMINAL_JOB_STATES for s in last.values())

        try:
            _wait(done, timeout, f"slurm job {job_id}")
        except TimeoutError:
            raise TimeoutError(f"slurm job {job_id} not done after {timeout}s: {last}") from None
        return last

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(env or {})}

    def _cancel_all(self, timeout: float = 10) -> None:
        """scancel every job, and wait until none is running (Slurm kills their processes, even
        those of jobs whose environment lacks our marker, e.g. sbatch --export=NONE)."""
        def ids(*state: str) -> list[str]:
            r = self.run(["squeue", "-h", "-o", "%A", *state], check=False, timeout=10)
            return r.stdout.split() if r.returncode == 0 else []

        jobs = ids()
        if jobs:
            self.run(["scancel", *jobs], check=False, timeout=10)
            with contextlib.suppress(TimeoutError):
                _wait(lambda: not ids("-t", "R,CG,CF,S,SO,ST"), timeout, "cancelling slurm jobs")

    def stop(self) -> None:
        """Cancel every job, stop the daemons and kill whatever of the jobs remains (found by the
        marker in their environment); remove the directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if all(self._procs.get(n) and self._procs[n].poll() is None
                   for n in ("munged", "slurmctld", "slurmd")):
                self._cancel_all()
            for name in ("slurmd", "slurmctld"):
                _stop(self._procs.get(name))
            # slurmstepd and job tasks outlive slurmd by design: find them by the marker that
            # slurmd's environment (so slurmstepd's) and every job submitted through env carry.
            marker = "BRASIL_SLURM_CLUSTER=" + self.extra_env["BRASIL_SLURM_CLUSTER"]
            _kill_until_gone(lambda: _pids_with_env(marker.encode()))
            _stop(self._procs.get("munged"))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def start_slurm(cpus: int = 8, timeout: float = 60) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd (all as root) with everything in a temporary directory.

    The node is this machine's short hostname at 127.0.0.1 with `cpus` CPUs whatever the hardware
    (SlurmdParameters=config_overrides); select/cons_tres with CR_CPU, so memory is not a consumable
    and jobs must not ask for --mem; no cgroups, no accounting (sacct does not work)."""
    _require_root("slurm (slurmd runs jobs as their submitter)")
    bins = {n: _binary(n, pkg) for n, pkg in [
        ("munged", "munge"), ("mungekey", "munge"), ("munge", "munge"),
        ("slurmctld", "slurmctld"), ("slurmd", "slurmd"), ("sbatch", "slurm-client"),
        ("srun", "slurm-client"), ("scontrol", "slurm-client"), ("squeue", "slurm-client"),
        ("scancel", "slurm-client")]}
    node = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(node)
    except OSError:
        raise ServiceUnavailable(f"the hostname {node!r} does not resolve (add it to /etc/hosts)")
    d = tempfile.mkdtemp(prefix="brasil-slurm-")
    os.chmod(d, 0o755)  # munged wants its socket's directory searchable by all
    for sub in ("state", "spool", "jobs"):
        os.mkdir(os.path.join(d, sub))
    conf = os.path.join(d, "slurm.conf")
    sock = os.path.join(d, "munge.sock")
    extra_env = {"SLURM_CONF": conf, "BRASIL_SLURM_CLUSTER": d}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    cluster = SlurmCluster(dir=d, conf=conf, node=node, cpus=cpus,
                           env={**base, **extra_env}, extra_env=extra_env)
    atexit.register(cluster.stop)
    try:
        ctld_port, slurmd_port = _free_ports(2)
        with open(conf, "w") as f:
            f.write(f"""\
ClusterName=brasil
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
MinJobAge=3600
KillWait=2
InactiveLimit=0
Waittime=0
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        open(os.path.join(d, "plugstack.conf"), "w").close()
        _run([bins["mungekey"], "--create", "--keyfile", os.path.join(d, "munge.key")])

        def daemon(name: str, argv: list[str]) -> subprocess.Popen[Any]:
            with open(os.path.join(d, name + ".out"), "wb") as out:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     env=cluster.env, cwd=d, start_new_session=True)
            cluster._procs[name] = p
            return p

        logs = [os.path.join(d, n) for n in ("munged.out", "slurmctld.log", "slurmctld.out",
                                             "slurmd.log", "slurmd.out")]
        munged = daemon("munged", [
            bins["munged"], "--foreground", "--key-file", os.path.join(d, "munge.key"),
            "--socket", sock, "--pid-file", os.path.join(d, "munged.pid"),
            "--seed-file", os.path.join(d, "munged.seed"),
            "--log-file", os.path.join(d, "munged.log"),
            "--num-threads", "4"])
        _wait(lambda: _run([bins["munge"], "-n", "-S", sock], check=False).returncode == 0,
              timeout, "munged", [("munged", munged)], logs)
        ctld = daemon("slurmctld", [bins["slurmctld"], "-D", "-i", "-f", conf])
        slurmd = daemon("slurmd", [bins["slurmd"], "-D", "-f", conf, "-N", node])
        watch = [("munged", munged), ("slurmctld", ctld), ("slurmd", slurmd)]

        def node_idle() -> bool:
            try:
                r = cluster.run(["scontrol", "-o", "show", "node", node], check=False, timeout=5)
            except subprocess.TimeoutExpired:
                return False
            return r.returncode == 0 and re.search(r"\bState=IDLE\b", r.stdout) is not None

        _wait(node_idle, timeout, "slurm node", watch, logs)
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclasses.dataclass
class PostgresServer:
    """A running postgres listening only on `socket_dir`/.s.PGSQL.`port`, trust auth."""

    dir: str
    bin: str
    socket_dir: str
    port: int
    user: str
    dbname: str
    _run_as: list[str] = dataclasses.field(default_factory=list, repr=False)
    _stopped: bool = dataclasses.field(default=False, repr=False)

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")

    @property
    def url(self) -> str:
        """e.g. postgresql:///brasil?host=%2Ftmp%2Fbrasil-pg-x&port=5432&user=postgres"""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        query = urllib.parse.urlencode({"host": self.socket_dir, "port": self.port,
                                        "user": self.user})
        return f"postgresql:///{urllib.parse.quote(dbname)}?{query}"

    def psql(self, sql: str, dbname: str | None = None) -> str:
        """Run SQL with psql (unaligned, tuples only); returns its output."""
        return _run([os.path.join(self.bin, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At",
                     "-h", self.socket_dir, "-p", str(self.port), "-U", self.user,
                     "-d", dbname or self.dbname, "-c", sql]).stdout

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name (owned by `user`); returns its URL."""
        _run([os.path.join(self.bin, "createdb"), "-h", self.socket_dir, "-p", str(self.port),
              "-U", self.user, name])
        return self.url_for(name)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                _run([*self._run_as, os.path.join(self.bin, "pg_ctl"), "stop", "-D", self.data,
                      "-m", "immediate", "-w", "-t", "10"], check=False, cwd=self.dir)
            # Whatever survived (every postgres process has the data directory as its cwd).
            _kill_until_gone(lambda: _pids_with_cwd(self.data))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _pids_with_cwd(path: str) -> set[int]:
    found = set()
    for pid in _pids():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd") == path:
                found.add(pid)
    return found


def _postgres_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise ServiceUnavailable(f"no /usr/lib/postgresql/*/bin/initdb (Debian package "
                                 f"postgresql); {INSTALL_HINT}")
    return os.path.dirname(found[-1])


@contextlib.contextmanager
def start_postgres(dbname: str = "brasil", timeout: float = 60) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a temporary directory, fsync off, no TCP, database `dbname`.

    As root the server runs as the `postgres` system user (postgres refuses root) in a directory
    it owns; otherwise as the current user. Clients connect as `postgres`, trusted."""
    bindir = _postgres_bin()
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable("no `postgres` system user (Debian package postgresql)")
        run_as = [_binary("runuser", "util-linux"), "-u", "postgres", "--"]
    d = tempfile.mkdtemp(prefix="brasil-pg-")
    if run_as:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(dir=d, bin=bindir, socket_dir=d, port=5432, user="postgres",
                            dbname=dbname, _run_as=run_as)
    atexit.register(server.stop)
    try:
        try:
            _run([*run_as, os.path.join(bindir, "initdb"), "-D", server.data, "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                 timeout=timeout, cwd=d)
            with open(os.path.join(server.data, "postgresql.conf"), "a") as f:
                f.write(f"listen_addresses = ''\nunix_socket_directories = '{d}'\n"
                        f"port = {server.port}\nfsync = off\nsynchronous_commit = off\n"
                        "full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 50\n")
            # pg_ctl -w itself polls until the server accepts connections (bounded by -t).
            _run([*run_as, os.path.join(bindir, "pg_ctl"), "start", "-D", server.data, "-w",
                  "-t", str(int(timeout)), "-s", "-l", os.path.join(d, "postgres.log")],
                 timeout=timeout + 5, cwd=d)
            server.create_database(dbname)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{_tail(os.path.join(d, 'postgres.log'))}") from None
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)


# -- ssh hosts in network namespaces -------------------------------------------------------------

_SSH_SERIAL = iter(range(1 << 30))
_SUBNET_LOCK = "/run/lock/brasil-ssh-hosts.lock"


@dataclasses.dataclass
class SshHosts:
    """n hosts: network namespaces `namespaces[i]` with address `ips[i]` (10.77.X.2…) on a bridge
    whose root-namespace address is `gateway` (10.77.X.1), each with its own sshd on port 22
    (except those in `down`). `ssh -F hosts.config IP CMD` logs in as root by key.

    Each sshd and every run()/popen() runs in its own UTS namespace with hostname `hostnames[i]`
    (h0, h1…), so `ssh -F cfg IP hostname` tells hosts apart; the file system, users and
    processes are the machine's own. Processes started over ssh live in the host's namespace and
    reach the other hosts (and the root namespace, at `gateway`) by IP over the bridge.

    With `private_tmp`, each sshd (and so everything started over ssh) sees its own /tmp, a fresh
    1777 directory bound over /tmp in a mount namespace of its own: what another user plants
    in one host's /tmp stays on that host, and the machine's /tmp is left alone.

    Making a host unreachable: `down=[i]` at start (or stop_sshd(i)): connection refused at once;
    disconnect(i): its link goes down, connections time out (ConnectTimeout); `unreachable_ip`:
    an address on the subnet where no host answers (times out)."""

    dir: str
    subnet: str  # "10.77.X"
    bridge: str
    gateway: str
    namespaces: list[str]
    ips: list[str]
    hostnames: list[str]
    config: str  # ssh_config for ssh -F
    key: str  # private key (authorized for root on every host)
    _veths: list[str] = dataclasses.field(default_factory=list, repr=False)
    _sshd: dict[int, subprocess.Popen[Any]] = dataclasses.field(default_factory=dict, repr=False)
    _made_ns: list[str] = dataclasses.field(default_factory=list, repr=False)
    _made_bridge: bool = dataclasses.field(default=False, repr=False)
    _stopped: bool = dataclasses.field(default=False, repr=False)
    private_tmp: bool = False  # each sshd sees its own /tmp

    @property
    def unreachable_ip(self) -> str:
        return f"{self.subnet}.254"

    def index(self, host: int | str) -> int:
        return host if isinstance(host, int) else self.ips.index(host)

    def ssh_argv(self, host: int | str, *command: str, options: Sequence[str] = ()) -> list[str]:
        """["ssh", "-F", config, *options, IP, *command]; host is an index or an IP."""
        ip = self.ips[host] if isinstance(host, int) else host
        return ["ssh", "-F", self.config, *options, ip, *command]

    def ssh(self, host: int | str, *command: str, timeout: float = 30, check: bool = False,
            options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        return _run(self.ssh_argv(host, *command, options=options), timeout=timeout, check=check)

    def _in_ns(self, i: int, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[i], "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.hostnames[i], *argv]

    def run(self, host: int | str, argv: Sequence[str], timeout: float = 30, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run argv inside host's namespace (not over ssh)."""
        return _run(self._in_ns(self.index(host), argv), timeout=timeout, check=check, **kw)

    def popen(self, host: int | str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside host's namespace; stop() kills it if still running."""
        return subprocess.Popen(self._in_ns(self.index(host), argv), **kw)

    def start_sshd(self, host: int | str, timeout: float = 30) -> None:
        i = self.index(host)
        if i in self._sshd and self._sshd[i].poll() is None:
            return
        log = os.path.join(self.dir, f"sshd{i}.log")
        sshd = ["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(self.dir, f"sshd_config{i}")]
        if self.private_tmp:
            tmp = os.path.join(self.dir, f"tmp{i}")
            os.makedirs(tmp, exist_ok=True)
            os.chmod(tmp, 0o1777)
            # brasil itself (this checkout and its virtualenv) stays visible where it is, even
            # when it lies under /tmp (a CI clone): bound into the private /tmp first
            keep = [p for p in _project_dirs() if p.startswith("/tmp/")]
            binds = "".join(f'mkdir -p "$0{p[4:]}" && mount --bind "{p}" "$0{p[4:]}" && '
                            for p in keep)
            sshd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    binds + 'mount --rbind "$0" /tmp && exec "$@"', tmp, *sshd]
        with open(log, "ab") as out:
            p = subprocess.Popen(
                self._in_ns(i, sshd),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        self._sshd[i] = p
        _wait(lambda: _ssh_banner(self.ips[i]), timeout, f"sshd on {self.ips[i]}",
              [("sshd", p)], [log])

    def stop_sshd(self, host: int | str) -> None:
        """Stop the listening sshd (sessions already open go on): new connections are refused."""
        _stop(self._sshd.pop(self.index(host), None))

    def disconnect(self, host: int | str) -> None:
        """Take the host's link down: packets to and from it are dropped (connections time out)."""
        _run(["ip", "link", "set", self._veths[self.index(host)], "down"])

    def reconnect(self, host: int | str) -> None:
        _run(["ip", "link", "set", self._veths[self.index(host)], "up"])

    def kill_processes(self, host: int | str) -> None:
        """Kill every process in the host's namespace (sshd included), like a crash."""
        ns = self.namespaces[self.index(host)]
        _kill_until_gone(lambda: {int(p) for p in _run(
            ["ip", "netns", "pids", ns], check=False).stdout.split()})
        self._sshd.pop(self.index(host), None)

    def stop(self) -> None:
        """Kill every process in the namespaces, delete them, the bridge and the directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            for p in self._sshd.values():
                _stop(p)
            for i in range(len(self._made_ns)):
                self.kill_processes(i)
        finally:
            for ns in self._made_ns:
                _run(["ip", "netns", "del", ns], check=False)
            for veth in self._veths:  # normally gone with their namespace's end
                _run(["ip", "link", "del", veth], check=False)
            if self._made_bridge:
                _run(["ip", "link", "del", self.bridge], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)


def _ssh_banner(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=0.5) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _pick_subnet() -> str:
    """A 10.77.X not already routed in the root namespace."""
    routes = _run(["ip", "-4", "-o", "route", "show", "table", "all"]).stdout
    addrs = _run(["ip", "-4", "-o", "addr", "show"]).stdout
    used = {int(m) for m in re.findall(r"\b10\.77\.(\d+)\.", routes + addrs)}
    for x in range(256):
        if x not in used:
            return f"10.77.{x}"
    raise RuntimeError("no free 10.77.X.0/24 subnet")


@contextlib.contextmanager
def start_ssh_hosts(n: int = 4, down: Iterable[int] = (), timeout: float = 30,
                    private_tmp: bool = False) -> Iterator[SshHosts]:
    """n network namespaces brasil-ssh-<pid>-<k>-<i> on a bridge in the root namespace, each with
    its own sshd (except the indices in `down`: namespace and address, nothing listening), and
    with `private_tmp` its own /tmp."""
    _require_root("network namespaces")
    for name, pkg in [("ip", "iproute2"), ("sshd", "openssh-server"), ("ssh", "openssh-client"),
                      ("ssh-keygen", "openssh-client"), ("unshare", "util-linux")]:
        _binary(name, pkg)
    if not 1 <= n <= 200:
        raise ValueError("1 <= n <= 200")
    down = set(down)
    k = next(_SSH_SERIAL) % 100
    tag = f"{os.getpid():x}-{k}"  # interface names: 15 characters at most
    # with private_tmp, sshd's own files must not be where each host's /tmp hides them
    d = tempfile.mkdtemp(prefix="brasil-ssh-", dir="/var/tmp" if private_tmp else None)
    hosts = SshHosts(dir=d, subnet="", bridge=f"bsb{tag}", gateway="",
                     namespaces=[f"brasil-ssh-{os.getpid()}-{k}-{i}" for i in range(n)],
                     ips=[], hostnames=[f"h{i}" for i in range(n)],
                     config=os.path.join(d, "ssh_config"), key=os.path.join(d, "id_ed25519"),
                     private_tmp=private_tmp)
    atexit.register(hosts.stop)
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "brasil-test", "-f", hosts.key])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "host_key")])
        shutil.copy(hosts.key + ".pub", os.path.join(d, "authorized_keys"))
        with open(hosts.config, "w") as f:
            f.write(f"""\
Host *
    User root
    IdentityFile {hosts.key}
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ConnectTimeout 5
    ControlMaster no
""")
        os.makedirs("/run/lock", exist_ok=True)
        with open(_SUBNET_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # against another run picking the same subnet
            hosts.subnet = _pick_subnet()
            hosts.gateway = f"{hosts.subnet}.1"
            _run(["ip", "link", "add", hosts.bridge, "type", "bridge"])
            hosts._made_bridge = True
            _run(["ip", "addr", "add", f"{hosts.gateway}/24", "dev", hosts.bridge])
        _run(["ip", "link", "set", hosts.bridge, "up"])
        for i, ns in enumerate(hosts.namespaces):
            ip = f"{hosts.subnet}.{i + 2}"
            hosts.ips.append(ip)
            veth = f"bsv{tag}-{i}"
            _run(["ip", "netns", "add", ns])
            hosts._made_ns.append(ns)
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            hosts._veths.append(veth)
            _run(["ip", "link", "set", veth, "master", hosts.bridge, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            with open(os.path.join(d, f"sshd_config{i}"), "w") as f:
                f.write(f"""\
ListenAddress {ip}:22
ListenAddress 127.0.0.1:22
HostKey {d}/host_key
PidFile {d}/sshd{i}.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 200
MaxSessions 200
Subsystem sftp internal-sftp
LogLevel INFO
""")
        for i in range(n):
            if i not in down:
                hosts.start_sshd(i, timeout)
        yield hosts
    finally:
        hosts.stop()
        atexit.unregister(hosts.stop)


# -- pytest fixtures -----------------------------------------------------------------------------

_shared: dict[str, Any] = {}


def _session_service(request: pytest.FixtureRequest, key: str,
                     start: Callable[[], contextlib.AbstractContextManager[Any]]) -> Any:
    """One instance per pytest session even when several modules import the fixture (each import
    is a separate fixture definition): started on first use, stopped when the session ends."""
    if key not in _shared:
        cm = start()
        try:
            _shared[key] = cm.__enter__()
        except BaseException as e:
            _shared[key] = e  # do not retry a slow failure in every test
            raise

        def cleanup() -> None:
            _shared.pop(key, None)
            cm.__exit__(None, None, None)

        request.config.add_cleanup(cleanup)
    value = _shared[key]
    if isinstance(value, ServiceUnavailable):
        raise value
    if isinstance(value, BaseException):
        raise RuntimeError(f"{key} failed to start earlier in this session: {value}")
    return value


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> SlurmCluster:
    """A SlurmCluster (8 CPUs on one node) shared by the session."""
    try:
        return _session_service(request, "slurm", start_slurm)
    except ServiceUnavailable as e:
        pytest.skip(f"slurm: {e}")


def _postgres(request: pytest.FixtureRequest) -> PostgresServer:
    try:
        return _session_service(request, "postgres", start_postgres)
    except ServiceUnavailable as e:
        pytest.skip(f"postgres: {e}")


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """A PostgresServer with database `brasil`, shared by the session."""
    return _postgres(request)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """The conninfo URL of database `brasil` on the session's server (for psycopg.connect)."""
    return _postgres(request).url


@pytest.fixture
def ssh_hosts(request: pytest.FixtureRequest) -> Iterator[SshHosts]:
    """Fresh SshHosts for this test: 4 hosts, or request.param (n, or a dict of start_ssh_hosts
    arguments) when parametrized indirectly."""
    param = getattr(request, "param", 4)
    kw = param if isinstance(param, dict) else {"n": param}
    try:
        cm = start_ssh_hosts(**kw)
        hosts = cm.__enter__()
    except ServiceUnavailable as e:
        pytest.skip(f"ssh hosts: {e}")
    try:
        yield hosts
    finally:
        cm.__exit__(None, None, None)
