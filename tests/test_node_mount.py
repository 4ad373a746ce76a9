"""The node daemon through `brasil mount`: plain shell commands drive it, as in the Brasil paper.

The daemon runs on this test's event loop; the mount and every shell command run in their own
processes, so file I/O on the mount never blocks the loop that must answer it.
"""

from __future__ import annotations

import os

import pytest

from fixtures import daemon, date_wc
from mount_helpers import CLI, mounted, run, sh, unmount

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="FUSE is not available")


@pytest.fixture
async def local(tmp_path):
    """A node daemon (4 slots, fs/ exported) mounted on tmp/mnt; yields /mnt/csrv/local."""
    (tmp_path / "export").mkdir()
    async with daemon(str(tmp_path), "n0", slots=4, export=str(tmp_path / "export")) as d:
        m = tmp_path / "mnt"
        m.mkdir()
        rc, _, err = await run(*CLI, "mount", "--at", str(d.unix), str(m))
        assert rc == 0, err
        try:
            yield f"{m}/csrv/local"
        finally:
            await unmount(str(m))
            assert not mounted(str(m))


async def test_paper_example_1_through_the_mount(local):
    rc, out, err = await sh(f"cat {local}/clone")
    assert (rc, out) == (0, "0\n"), err
    rc, out, err = await sh(f'echo "res 4" > {local}/0/ctl && echo "exec date" > {local}/0/ctl '
                            f"&& cat {local}/0/stdio")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and len(set(len(x) for x in lines)) == 1, out


async def test_paper_example_2_through_the_mount(local):
    script = f"""
        cat {local}/clone > /dev/null
        echo "res 2" > {local}/0/ctl
        echo "exec date" > {local}/0/0/ctl
        echo "exec wc" > {local}/0/1/ctl
        echo "xsplice 0 1" > {local}/0/ctl
        cat {local}/0/1/stdio
    """
    rc, out, err = await sh(script)
    assert rc == 0, err
    assert out.split() == date_wc()


async def test_writing_a_file_into_a_session_broadcasts_it(local, tmp_path):
    data = tmp_path / "input.txt"
    data.write_text("".join(f"line {i}\n" for i in range(2500)))
    rc, out, err = await sh(f"""
        cat {local}/clone > /dev/null
        echo "res 3" > {local}/0/ctl
        echo "exec wc -l" > {local}/0/ctl
        cat {data} > {local}/0/stdio
        cat {local}/0/stdio
    """)
    assert rc == 0, err
    assert out.split() == ["2500"] * 3


async def test_mux_rr_partitions_long_and_short_lines_through_the_mount(local, tmp_path):
    data = tmp_path / "input.txt"
    with open(data, "w") as f:
        for i in range(6):
            f.write(f"{i}:" + chr(97 + i) * 1_000_000 + "\n")  # 1 MB lines
        for i in range(20000):
            f.write(f"short {i}\n")
    out_path = tmp_path / "out.txt"
    rc, _, err = await sh(f"""
        cat {local}/clone > /dev/null
        echo "res 4" > {local}/0/ctl
        echo "mux rr" > {local}/0/ctl
        echo "exec cat" > {local}/0/ctl
        cat {data} > {local}/0/stdio &
        cat {local}/0/stdio > {out_path}
        wait
    """)
    assert rc == 0, err
    assert sorted(out_path.read_bytes().splitlines()) == sorted(data.read_bytes().splitlines())


@pytest.mark.parametrize("script, shown", [
    ("echo 'res 999' > {L}/0/ctl", "I/O error"),
    ("echo 'exec no-such-program' > {L}/0/ctl", "I/O error"),
    ("echo 'frobnicate' > {L}/0/ctl", "I/O error"),
    ("echo mips > {L}/arch", "Permission denied"),
    ("cat {L}/fs/../../../etc/hostname", "No such file"),
])
async def test_bad_requests_fail_the_shell_command_and_the_daemon_goes_on(local, script, shown):
    """FUSE carries only an errno to the shell (the daemon's sentence goes to the mount's log
    and to 9P clients); permission and existence errors keep their own errno."""
    await sh(f"cat {local}/clone")
    rc, out, err = await sh(script.format(L=local))
    assert rc != 0 and shown in err
    rc, out, _ = await sh(f"cat {local}/arch")
    assert rc == 0 and out.startswith("linux")


async def test_ls_l_shows_the_namespace_with_real_sizes(local):
    rc, out, err = await sh(f"ls -l {local}")
    assert rc == 0, err
    rows = {ln.split()[-1]: ln.split() for ln in out.splitlines()[1:]}
    assert {"arch", "status", "env", "ns", "clone", "net", "fs"} <= set(rows)
    assert rows["fs"][0].startswith("d") and rows["clone"][0] == "-rw-rw-rw-"
    _, arch, _ = await sh(f"cat {local}/arch")
    _, status, _ = await sh(f"cat {local}/status")
    assert int(rows["arch"][4]) == len(arch.encode())
    assert int(rows["status"][4]) > 0 and status.startswith("n0 4 4 ")
