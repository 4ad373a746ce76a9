"""Issue 16 §3: commands run where the user is, on every node, as srun runs them.

The README's `push -c "cat corpus |< tr …"` failed on a tree (`cat: corpus: No such file`), and
`cd DIR;` in a script did nothing there. Now the client sends its directory with the session
(`dir PATH`, handed down the tree like the environment)."""

from __future__ import annotations

import os
import subprocess

import pytest

from terminal import BIN, ReadmeTree


@pytest.fixture(scope="module")
def tree():
    with ReadmeTree(depth=1, fanout=2, slots=2) as t:
        yield t


def tool(name: str, *args: str, cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.path.join(BIN, name), *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env}, timeout=120, stdin=subprocess.DEVNULL)


def test_push_on_a_tree_reads_a_relative_path_where_the_user_is(tree, tmp_path):
    (tmp_path / "corpus").write_text("b a\nc a\n")
    r = tool("push", "-c", "cat corpus |<[2] tr ' ' '\\n' >| sort | uniq -c", cwd=str(tmp_path),
             env=tree.env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "a", "1", "b", "1", "c"]


def test_cd_in_a_push_script_moves_the_commands_after_it(tree, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("x\n")
    r = tool("push", "-c", "cd sub; cat f |<[2] cat >| cat; pwd |< cat >| cat", cwd=str(tmp_path),
             env=tree.env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["x", str(tmp_path / "sub")]


def test_brasil_run_runs_every_rank_in_the_callers_directory(tree, tmp_path):
    r = tool("brasil", "run", "-b", "--", "pwd", cwd=str(tmp_path), env=tree.env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path)
    r = tool("brasil", "run", "-n", "3", "-D", "/", "--", "pwd", cwd=str(tmp_path), env=tree.env)
    assert [ln.split(": ")[1] for ln in r.stdout.splitlines()] == ["/"] * 3


def test_a_node_without_the_directory_is_named_with_it(tree, tmp_path):
    gone = tmp_path / "gone"
    r = tool("brasil", "run", "-w", "n1", "-D", str(gone), "--", "true", cwd=str(tmp_path),
             env=tree.env)
    assert r.returncode != 0
    assert f"the directory {gone} does not exist on node n1" in r.stderr, r.stderr


def test_dir_must_be_absolute():
    from brasil.ninep.errors import NinepError
    from brasil.node.daemon import Node
    from brasil.node.session import Session
    s = Session(Node(name="n0", slots=1), "0")
    with pytest.raises(NinepError, match="not an absolute path"):
        s.set_dir("relative/path")
