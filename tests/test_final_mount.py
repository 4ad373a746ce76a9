"""FiNAL views through `brasil mount` (issue 21 §5): a view defined with the shell's `>` on a
mount of a real 1+1 tree, read back with ls and cat; a wrong line fails the shell's write and
leaves no view. Apart from tests/test_final.py because it needs FUSE (mount_helpers skips a
module where there is none)."""

from __future__ import annotations

from fixtures import tree_of
from mount_helpers import CLI, needs_fuse, run, sh, unmount

pytestmark = needs_fuse


async def test_a_view_written_with_the_shells_redirection_on_a_mount(tmp_path):
    x = tmp_path / "x"
    async with tree_of(str(tmp_path), 1, export_root=str(x)) as (nodes, c):
        for n in ("n0", "n1"):
            (x / n / "proc").mkdir()
            (x / n / "proc" / "cpuinfo").write_text(f"cpu of {n}\n")
            (x / n / "proc" / "1").mkdir()
        m = tmp_path / "mnt"
        m.mkdir()
        rc, _, err = await run(*CLI, "mount", "--at", f"unix:{tmp_path}/n0.sock", str(m))
        assert rc == 0, err
        try:
            views, view = m / "csrv/local/views", m / "csrv/query/view"
            rc, out, err = await sh(f"printf 'merge fs/proc\\nremove [0-9]*\\n' > {views}/p && "
                                    f"ls {view}/p && cat {view}/p/cpuinfo/n1")
            assert rc == 0 and out == "cpuinfo\ncpu of n1\n", err
            rc, out, err = await sh(f"printf 'merge fs/proc\\nmereg x\\n' > {views}/bad")
            assert rc != 0 and "error" in err  # the shell sees the errno; the sentence is 9P's
            rc, out, err = await sh(f"ls {views}")
            assert out.split() == ["p"]
        finally:
            await unmount(str(m))
