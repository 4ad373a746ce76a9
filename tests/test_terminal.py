"""Issue 16: the tools as a person meets them, at a real terminal, on a tree made as the README
makes it. Each test reads the final screen (tests/terminal.py)."""

from __future__ import annotations

import os

import pexpect
import pytest

from terminal import BIN, ReadmeTree, at_terminal


@pytest.fixture(scope="module")
def tree():
    with ReadmeTree(depth=1, fanout=2, slots=2) as t:
        yield t


def numbers(screen_lines: list[str]) -> list[str]:
    return [ln for ln in screen_lines if ln.strip()]


def test_push_with_its_status_line_at_a_terminal_prints_every_result_and_no_status():
    s = at_terminal(["push", "--local", "--status", "on", "-c", "seq 3 |<[2] cat >| sort -n"])
    assert s.status == 0, s.text
    assert numbers(s.lines) == ["1", "2", "3"], s.text
    assert "Traceback" not in s.text


def test_push_at_a_terminal_draws_a_status_by_default_and_erases_it():
    s = at_terminal(["push", "--local", "-c", "seq 200000 |<[2] cat >| sort -n | tail -2"])
    assert s.status == 0
    assert numbers(s.lines) == ["199999", "200000"], s.text
    assert b"running" in s.raw  # it was drawn, and is gone from the final screen


@pytest.mark.parametrize("script,want", [
    ("seq 8 |<[2] cat >| sort -n", [str(i) for i in range(1, 9)]),
    ("seq 8 |<[2] cat >| sort -n | head -3", ["1", "2", "3"]),
    # a status drawn before, between and after the results (its ticks are 0.5 s apart)
    ("seq 8 |<[2] cat >| sh -c 'sleep 1.2; sort -n; sleep 1.2'",
     [str(i) for i in range(1, 9)]),
])
def test_on_a_tree_the_status_line_never_erases_or_glues_the_results(tree, script, want):
    s = at_terminal(["push", "--status", "on", "-c", script], env=tree.env)
    assert s.status == 0, s.text
    assert numbers(s.lines) == want, s.text  # no `running` left, no `0.5s1`


@pytest.mark.parametrize("where", ["local", "tree"])
def test_a_failed_source_fails_the_pipeline_the_same_way_every_time(tree, where):
    args = ["--local"] if where == "local" else []
    env = tree.env if where == "tree" else {}
    seen = set()
    for _ in range(4):
        s = at_terminal(["push", *args, "-c", "cat /nonexist |< wc -l >| cat"], env=env)
        seen.add(s.status)
        assert "push: stage 1 `cat /nonexist`" in s.text and "exit status 1" in s.text, s.text
    assert seen == {1}


def test_brasil_run_at_a_terminal_prints_every_node(tree):
    s = at_terminal(["brasil", "run", "-b", "--", "echo", "hi"], env=tree.env)
    assert s.status == 0, s.text
    assert "hi" in s.text and "Traceback" not in s.text


def test_pcp_at_a_terminal_shows_progress_then_only_its_result(tree, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * (8 << 20))
    s = at_terminal(["brasil", "pcp", "--where", "name=n1", str(src), f"fs{tmp_path}/copy.bin"],
                    env=tree.env)
    assert s.status == 0, s.text
    assert s.lines == ["copied 8388608 bytes to 1 node(s)"], s.text
    assert (tmp_path / "copy.bin").stat().st_size == 8 << 20


def test_ptop_at_a_terminal_draws_the_table_and_ctrl_c_ends_it(tree):
    child = pexpect.spawn(os.path.join(BIN, "brasil"), ["ptop", "--interval", "0.2"],
                          env={**os.environ, **tree.env}, dimensions=(40, 120), timeout=30)
    try:
        child.expect("brasil ptop")
        child.expect("n2")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert b"Traceback" not in (child.before or b"")


def test_brasil_wait_at_a_terminal_shows_its_bar_then_the_summary(tree, tmp_path):
    import subprocess
    worker = subprocess.Popen([os.path.join(BIN, "brasil"), "worker", "--slots", "2", "-q",
                               "--workdir", str(tmp_path / "w")], env={**os.environ, **tree.env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = subprocess.run([os.path.join(BIN, "brasil"), "submit", "--tag", "term", "--file", "-"],
                           input="sleep 0.2\n" * 6, text=True, capture_output=True, cwd=tmp_path,
                           env={**os.environ, **tree.env}, timeout=60)
        assert r.returncode == 0, r.stderr
        s = at_terminal(["brasil", "wait", "--tag", "term"], env=tree.env)
        assert s.status == 0, s.text
        assert s.lines[-1] == "total 6 done 6", s.text
        assert "6/6" in s.text and "Traceback" not in s.text  # the bar, at its end
    finally:
        worker.terminate()
        worker.wait(30)
