"""exec/spawn.py: the lean spawn (``_posixsubprocess.fork_exec`` called as Popen calls it), the
compiled batch (``spawn_batch``, exec/_spawn.c) and Popen itself behave alike: exactly the
environment given, the directory, a session of its own, no descriptor of ours but those passed,
and the same errors when a command cannot start."""

import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from brasil.exec import spawn as spawning
from brasil.exec.cgroups import CommandCgroups
from brasil.exec.process import spawn_many
from brasil.exec.spawn import CgroupError, spawn, spawn_batch

# The lean spawn vforks, and then takes an empty report pipe for a started child at once; told
# not to vfork (as Popen can be), it waits for the pipe's end of file as Popen does.
WAYS = [pytest.param("vfork", id="lean"), pytest.param("fork", id="lean-fork"),
        pytest.param("", id="popen"), pytest.param("native", id="native")]

needs_native = pytest.mark.skipif(spawning.native is None,
                                  reason="exec/_spawn.c is not built here (no compiler?)")


def way(lean: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if lean == "native":
        if spawning.native is None:
            pytest.skip("exec/_spawn.c is not built here (no compiler?)")
        return
    if lean and not spawning.LEAN:
        pytest.skip("the lean spawn is for CPython 3.11's fork_exec; this is another Python")
    monkeypatch.setattr(spawning, "LEAN", bool(lean))
    if lean == "fork":
        monkeypatch.setattr(subprocess, "_USE_VFORK", False)


def started(lean, argv, env, cwd=None, pass_fds=()):  # type: ignore[no-untyped-def]
    """One command started the ``lean`` way; the batch passes no descriptor."""
    if lean != "native":
        return spawn(argv, env, cwd, pass_fds)
    [p] = spawn_batch([(argv, env, cwd, None)])
    if isinstance(p, Exception):
        raise p
    for pipe in (p.stdout, p.stderr):  # (non-blocking, for a loop: these tests read them here)
        os.set_blocking(pipe.fileno(), True)
    return p


def run(lean: str, monkeypatch, argv, env=None, cwd=None, pass_fds=()):  # type: ignore[no-untyped-def]
    way(lean, monkeypatch)
    p = started(lean, argv, env if env is not None else {"PATH": "/usr/bin:/bin"}, cwd, pass_fds)
    p.stdin.close()
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    return p.wait(), out.decode(), err.decode(), p.pid


@pytest.mark.parametrize("lean", WAYS)
def test_a_command_gets_exactly_its_environment_directory_and_session(lean, monkeypatch, tmp_path):
    rc, out, err, pid = run(lean, monkeypatch, ["sh", "-c", 'echo "$A|$PWD"; env | wc -l; '
                                                "ps -o sid= -p $$; echo oops >&2; exit 3"],
                            {"PATH": "/usr/bin:/bin", "A": "x y"}, str(tmp_path))
    lines = out.split("\n")
    assert rc == 3 and err == "oops\n"
    assert lines[0] == f"x y|{tmp_path}"
    assert int(lines[1]) <= 4  # A, PATH and what sh adds itself (PWD, SHLVL)
    assert int(lines[2]) == pid  # a session of its own: it leads it


@pytest.mark.parametrize("lean", WAYS)
def test_no_descriptor_of_ours_reaches_the_command_but_those_passed(lean, monkeypatch, tmp_path):
    leaky = os.open(tmp_path / "leaky", os.O_WRONLY | os.O_CREAT, 0o600)
    passed = os.open(tmp_path / "passed", os.O_WRONLY | os.O_CREAT, 0o600)
    os.set_inheritable(leaky, True)  # even one marked inheritable
    try:
        rc, out, _, _ = run(lean, monkeypatch, ["sh", "-c", "ls /proc/self/fd"],
                            pass_fds=(passed,))
    finally:
        os.close(leaky)
        os.close(passed)
    fds = {int(x) for x in out.split()}
    assert rc == 0 and (passed in fds) == (lean != "native") and leaky not in fds
    assert fds <= {0, 1, 2, 3, passed}  # (3: the directory ls reads /proc/self/fd with)


@pytest.mark.parametrize("lean", WAYS)
def test_what_cannot_start_raises_as_popen_does(lean, monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        run(lean, monkeypatch, ["no-such-program-here"])
    assert e.value.filename == "no-such-program-here"
    with pytest.raises(FileNotFoundError) as e:
        run(lean, monkeypatch, ["true"], cwd=str(tmp_path / "gone"))
    assert e.value.filename == str(tmp_path / "gone")
    (tmp_path / "x").write_text("not a program")
    with pytest.raises(PermissionError):
        run(lean, monkeypatch, [str(tmp_path / "x")])
    with pytest.raises(ValueError):
        run(lean, monkeypatch, ["echo", "a\0b"])
    with pytest.raises(ValueError):
        run(lean, monkeypatch, ["true"], {"A=B": "c"})
    # Nothing of ours left open by the failures.
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        run(lean, monkeypatch, ["no-such-program-here"])
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("lean", WAYS)
def test_given_descriptors_instead_of_pipes(lean, monkeypatch, tmp_path):
    """A batch job (batch/worker.py): its input /dev/null, its output and errors one file, in its
    home; no pipe is made, and the caller's descriptors stay open for it to close."""
    if lean == "native":
        pytest.skip("a node's commands always get pipes")
    way(lean, monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        p = spawn(["sh", "-c", "cat; echo out; echo err >&2; pwd; ls /proc/self/fd"],
                  {"PATH": "/usr/bin:/bin"}, str(home), stdio=(devnull, out, out))
        assert p.stdin is None and p.stdout is None and p.stderr is None
        assert p.wait() == 0
        assert os.fstat(devnull) and os.fstat(out)  # still ours, still open
    finally:
        os.close(devnull)
        os.close(out)
    lines = (tmp_path / "out").read_text().split("\n")
    assert lines[:3] == ["out", "err", str(home)]
    assert {int(x) for x in lines[3:] if x} <= {0, 1, 2, 3}


def test_the_environment_is_given_exactly_and_its_encoding_cache_stays_bounded():
    """Encoded variables are kept between spawns (a node's commands share most of theirs), at
    most _ENCODED_MAX of them and none longer than _ENCODED_LONGEST: a session's huge or many
    values cannot grow the daemon."""
    spawn_module = spawning
    if not spawn_module.LEAN:
        pytest.skip("Popen encodes the environment itself here")
    spawn_module._encoded.clear()
    for i in range(3):
        env = {"PATH": os.defpath, "SAME": "x", "RANK": str(i), "HUGE": "y" * 10_000}
        p = spawn_module.spawn(["/usr/bin/env"], env)
        out = p.stdout.read().decode().splitlines()
        for pipe in (p.stdout, p.stderr, p.stdin):
            pipe.close()
        p.wait()
        assert sorted(out) == sorted(f"{k}={v}" for k, v in env.items())
    assert ("SAME", "x") in spawn_module._encoded
    assert not any(k == "HUGE" for k, _ in spawn_module._encoded)
    for i in range(spawn_module._ENCODED_MAX + 10):
        spawn_module._env_list({f"V{i}": "v"})
    assert len(spawn_module._encoded) <= spawn_module._ENCODED_MAX
    with pytest.raises(ValueError, match="illegal environment variable name"):
        spawn_module._env_list({"A=B": "c"})


async def test_a_leafs_launch_forks_on_one_thread_and_a_big_one_on_two():
    """Two spawn threads overlap their forks but trade the interpreter lock at every system
    call; below exec/process.SPLIT jobs the CPU counts more (one thread), from it the time."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from brasil.exec.process import SPLIT, ForkLauncher
    from brasil.ninep.stream import Stream

    class Recording:  # an Executor that records each batch and starts nothing
        def __init__(self) -> None:
            self.batches: list[int] = []

        def submit(self, fn, jobs, *args):  # type: ignore[no-untyped-def]
            self.batches.append(len(jobs))
            f: Future[list[BaseException]] = Future()
            f.set_result([RuntimeError("not started")] * len(jobs))
            return f

    spawner = Recording()
    watchdog = SimpleNamespace(env={})
    launcher = ForkLauncher(spawner, lambda: watchdog)  # type: ignore[arg-type]
    for n in (0, 1, 32, SPLIT - 1, SPLIT, 1024):
        jobs = [(["true"], {}, None, None)] * n
        out = await launcher.launch(jobs, [(Stream(), Stream(), Stream())] * n)
        assert len(out) == n and all(isinstance(p, RuntimeError) for p in out)
    assert spawner.batches == [1, 32, SPLIT - 1, SPLIT // 2, SPLIT // 2, 512, 512]


def test_the_compiled_spawn_is_built_where_it_can_be():
    """``make setup`` builds exec/_spawn.c where there is a compiler and Python's headers; its
    build is optional (the batch then starts from Python), so a failed build would otherwise
    only show as a slower node."""
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if sys.platform != "linux" or not shutil.which("gcc") or not headers:
        pytest.skip("no compiler or no Python headers here: the batch starts from Python")
    assert spawning.native is not None, "exec/_spawn.c did not build: see pip's output"


def _close(p) -> None:  # type: ignore[no-untyped-def]
    for pipe in (p.stdin, p.stdout, p.stderr):
        pipe.close()
    if p.pidfd >= 0:
        os.close(p.pidfd)


@needs_native
def test_a_batch_gives_each_job_its_own_answer_in_order():
    """One job's failure is its own: the others start; each error is what spawn would raise;
    the started ones come with a pidfd that reads ready once they end."""
    env = {"PATH": "/usr/bin:/bin"}
    before = set(os.listdir("/proc/self/fd"))
    out = spawn_batch([(["echo", "one"], env, None, None), (["echo", "a\0b"], env, None, None),
                       (["no-such-program-here"], env, None, None),
                       (["true"], {**env, "A=B": "c"}, None, None),
                       (["echo", "four"], env, None, None)])
    ok1, nul, missing, bad_env, ok4 = out
    assert isinstance(nul, ValueError) and isinstance(bad_env, ValueError)
    assert isinstance(missing, FileNotFoundError) and missing.filename == "no-such-program-here"
    for p, word in ((ok1, b"one\n"), (ok4, b"four\n")):
        assert p.pidfd >= 0
        select.select([p.pidfd], [], [], 10)
        assert p.wait() == 0
        assert select.select([p.pidfd], [], [], 0)[0] == [p.pidfd]
        select.select([p.stdout], [], [], 10)
        assert p.stdout.read() == word
        _close(p)
    assert set(os.listdir("/proc/self/fd")) == before


@needs_native
def test_a_batch_child_gets_default_signals_and_an_empty_mask(monkeypatch):
    """Python ignores SIGPIPE (and SIGXFSZ); a command must not (``yes | head`` would never
    end), and nothing blocked around the fork may stay blocked in it. A handler of ours is
    reset in the child before anything can deliver to it (it would run in our memory)."""
    monkeypatch.setattr(signal, "SIGUSR1", signal.SIGUSR1)
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        [p] = spawn_batch([(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
                            {"PATH": "/usr/bin:/bin"}, None, None)])
        assert not isinstance(p, Exception)
        assert p.wait() == 0
        lines = dict(line.split(":") for line in p.stdout.read().decode().splitlines())
        _close(p)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert int(lines["SigBlk"], 16) == 0
    ignored = int(lines["SigIgn"], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig!r} still ignored in the command"


needs_cgroups = pytest.mark.skipif(not CommandCgroups.here(),
                                   reason="no writable cgroup v2 here")


@needs_cgroups
@pytest.mark.parametrize("compiled", [pytest.param(True, id="native"),
                                      pytest.param(False, id="python")])
def test_a_command_is_in_its_slots_cgroup_before_it_runs_a_word(compiled, monkeypatch):
    """What a command starts can never be outside its slot's cgroup: the compiled batch moves
    each child before its exec, a program run directly as well as a shell; from Python a shell
    enters it itself (a program is moved right after its vfork, when it may already have run).
    Both ways of exec/process.spawn_many."""
    from brasil.exec import process
    if compiled and spawning.native is None:
        pytest.skip("exec/_spawn.c is not built here")
    if not compiled:
        monkeypatch.setattr(process, "native", None)
    cgroups = CommandCgroups.create()
    assert cgroups is not None
    watchdog = type("W", (), {"cgroups": cgroups, "watch": lambda self, pid: None})()
    env = {"PATH": "/usr/bin:/bin"}
    jobs = [(["/bin/sh", "-c", "cat /proc/self/cgroup"], env, None, 0)]
    if compiled:
        jobs.append((["cat", "/proc/self/cgroup"], env, None, 1))
    out = spawn_many(jobs, watchdog)  # type: ignore[arg-type]
    try:
        for p, slot in zip(out, range(len(jobs))):
            assert p.wait() == 0 and p.cgroup is cgroups.slot(slot)
            os.set_blocking(p.stdout.fileno(), True)
            text = p.stdout.read().decode()
            assert text.strip().endswith(f"/{os.path.basename(cgroups.path)}/s{slot}"), text
    finally:
        for p, slot in zip(out, range(len(jobs))):
            p.wait()
            _close(p)
            os.rmdir(cgroups.slot(slot).path)
        os.rmdir(cgroups.path)


@needs_native
def test_what_is_not_its_cgroups_file_starts_nothing(tmp_path):
    """A command is started only inside the cgroup it was given: a link planted in place of
    its ``cgroup.procs`` (by whoever could write beside it) is not followed, and a file that is
    not a cgroup's is refused, each failing that one command, whose program never runs."""
    target = tmp_path / "victim"
    target.write_text("")
    link = tmp_path / "cgroup.procs"
    link.symlink_to(target)
    marker = tmp_path / "ran"
    before = set(os.listdir("/proc/self/fd"))
    env = {"PATH": "/usr/bin:/bin"}
    out = spawn_batch([(["touch", str(marker)], env, None, str(link)),
                       (["touch", str(marker)], env, None, str(target)),
                       (["touch", str(marker)], env, None, str(tmp_path / "gone"))])
    assert all(isinstance(p, CgroupError) for p in out), out
    assert [p.filename for p in out] == [str(link), str(target), str(tmp_path / "gone")]
    assert not marker.exists() and target.read_text() == ""
    assert set(os.listdir("/proc/self/fd")) == before


@needs_native
@needs_cgroups
def test_a_slot_runs_commands_again_after_its_cgroup_was_killed():
    """A session's close kills its slots' cgroups (cgroup.kill) and the next session's
    commands start in the same cgroups: each must run, not die on arrival. (Children born in
    their cgroup by clone3's CLONE_INTO_CGROUP did, on Linux 6.18: why _spawn.c moves them.)"""
    cgroups = CommandCgroups.create()
    assert cgroups is not None
    slot = cgroups.slot(0)
    try:
        for _ in range(3):
            [p] = spawn_batch([(["true"], {"PATH": "/usr/bin:/bin"}, None, slot.procs)])
            assert not isinstance(p, Exception)
            assert p.wait() == 0
            _close(p)
            slot.signal(signal.SIGKILL)
    finally:
        os.rmdir(slot.path)
        os.rmdir(cgroups.path)


# Attacks on the compiled batch (found by a review, each a script first) ------------------------

@needs_native
@needs_cgroups
def test_a_handler_installed_while_a_batch_runs_never_runs_for_a_child():
    """The batch runs without the interpreter lock, so the main thread may install a signal
    handler meanwhile. A child shares our memory until its exec: a handler of ours left set in
    it would run the daemon's code for a signal sent to the child (a SIGTERM to the child
    stopping the daemon). Each child resets what is set when it starts, not what was set when
    the batch began. Children are held before their exec by freezing their cgroups."""
    import threading
    import time
    cgroups = CommandCgroups.create()
    assert cgroups is not None
    s0, s1 = cgroups.slot(0), cgroups.slot(1)
    for s in (s0, s1):
        (Path(s.path) / "cgroup.freeze").write_text("1")
    env = {"PATH": "/usr/bin:/bin"}
    out: list = []
    t = threading.Thread(target=lambda: out.extend(
        spawn_batch([(["sleep", "0.2"], env, None, s.procs) for s in (s0, s1)])))
    got: list[int] = []
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        t.start()
        deadline = time.monotonic() + 10
        while not Path(s0.procs).read_text().strip():  # the first child, held before its exec
            assert time.monotonic() < deadline
            time.sleep(0.01)
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1))  # installed mid-batch
        (Path(s0.path) / "cgroup.freeze").write_text("0")
        while not Path(s1.procs).read_text().strip():  # the second, held the same way
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(int(Path(s1.procs).read_text()), signal.SIGUSR1)  # to the child, not to us
        (Path(s1.path) / "cgroup.freeze").write_text("0")
        t.join(10)
        assert not t.is_alive()
        p0, p1 = out
        assert p0.wait() == 0 and p1.wait() == -signal.SIGUSR1  # the default: it ended
        assert got == []  # and our handler never ran
    finally:
        signal.signal(signal.SIGUSR1, previous)
        for s in (s0, s1):
            (Path(s.path) / "cgroup.freeze").write_text("0")
        t.join(10)
        for p in out:
            p.wait()
            _close(p)
        for s in (s0, s1):
            os.rmdir(s.path)
        os.rmdir(cgroups.path)


@needs_native
def test_a_fifo_planted_as_cgroup_procs_fails_at_once(tmp_path):
    """Opening it for writing would wait for a reader, holding the spawn thread for ever."""
    import threading
    fifo = tmp_path / "cgroup.procs"
    os.mkfifo(fifo)
    out: list = []
    t = threading.Thread(target=lambda: out.extend(
        spawn_batch([(["true"], {"PATH": "/usr/bin:/bin"}, None, str(fifo))])), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the spawn thread waits on the FIFO"
    assert isinstance(out[0], CgroupError)


@needs_native
def test_a_daemon_without_standard_descriptors_keeps_each_pipe_apart(tmp_path):
    """Started with 0, 1 and 2 closed, a daemon's first pipes get those numbers; the child's
    dup2 onto its standard descriptors must not put one pipe in another's place."""
    script = tmp_path / "closed.py"
    script.write_text(
        "import os, sys, select\n"
        "from brasil.exec.spawn import spawn_batch\n"
        "[p] = spawn_batch([(['sh', '-c', 'cat; echo out; echo err >&2'],"
        " {'PATH': '/usr/bin:/bin'}, None, None)])\n"
        "p.stdin.write(b'in\\n'); p.stdin.close(); p.wait()\n"
        "select.select([p.stdout, p.stderr], [], [], 5)\n"
        "out, err = p.stdout.read(), p.stderr.read()\n"
        f"open({str(tmp_path / 'got')!r}, 'w').write(repr((out, err)))\n")
    r = subprocess.run([sys.executable, "-I", str(script)], stdin=subprocess.DEVNULL,
                       pass_fds=(), close_fds=True, timeout=60,
                       preexec_fn=lambda: [os.close(fd) for fd in (0, 1, 2)])
    assert r.returncode == 0
    assert (tmp_path / "got").read_text() == repr((b"in\nout\n", b"err\n"))


NO_MEMORY = """
import gc, json, os, signal, _testcapi
import psutil
from brasil.exec.spawn import native
job = ((b"sleep", b"60"), (b"/bin/sleep",), (b"PATH=/usr/bin:/bin",), None, None)
before = set(os.listdir("/proc/self/fd"))
failed, left = 0, []
gc.disable()
for nth in range(40):
    _testcapi.set_nomemory(nth, 0)
    try:
        answer = native.spawn_batch((job, job, job))
    except MemoryError:
        answer = None
    finally:
        _testcapi.remove_mem_hooks()
    if answer is not None:
        for pid, *fds in answer:
            os.kill(pid, signal.SIGKILL)
            for fd in fds:
                os.close(fd)
            os.waitpid(pid, 0)
        break
    failed += 1
    left += [c.pid for c in psutil.Process().children()]  # running or not, not reaped
    left += [nth] if set(os.listdir("/proc/self/fd")) != before else []
print(json.dumps({"failed": failed, "left": left}))
"""


@needs_native
def test_when_the_answer_cannot_be_made_no_child_or_descriptor_is_left():
    """Children already started when building the answer fails (no memory) would be unknown
    to everyone: they are killed and reaped, and every descriptor is closed. Every allocation
    of a batch of three is made to fail in turn (in a process of its own: the failing
    allocator would reach any thread of ours)."""
    pytest.importorskip("_testcapi")
    r = subprocess.run([sys.executable, "-I", "-c", NO_MEMORY], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["failed"] > 0  # (some allocation did fail: the test tested something)
    assert got["left"] == []


@needs_native
def test_a_huge_argument_or_environment_is_that_command_s_error_alone():
    """An argument over the kernel's 128 KiB bound, or an environment over its total, fails
    that one command with the system's reason (E2BIG); the next job of the batch starts."""
    env = {"PATH": "/usr/bin:/bin"}
    huge_arg, huge_env, fine = spawn_batch([
        (["echo", "x" * (1 << 20)], env, None, None),
        (["true"], {**env, **{f"V{i}": "y" * 100_000 for i in range(400)}}, None, None),
        (["echo", "fine"], env, None, None)])
    for e in (huge_arg, huge_env):
        assert isinstance(e, OSError) and e.errno == errno.E2BIG, e
    assert not isinstance(fine, Exception) and fine.wait() == 0
    _close(fine)
