"""PUSH on this machine (issue 8): the language, record modules, distribution, failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from brasil.push.local import LocalRun, PipelineFailed
from brasil.push.plan import PlanError, make_plan
from brasil.push.shell import substitute_status
from brasil.push.syntax import PushSyntaxError, parse
from fixtures import push_inputs


def push(*args: str, stdin: bytes = b"", cwd: str | None = None, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    e = {k: v for k, v in os.environ.items() if k != "BRASIL"}
    return subprocess.run([sys.executable, "-m", "brasil.cli.push", *args], input=stdin,
                          capture_output=True, cwd=cwd, env={**e, **(env or {})}, timeout=timeout)


def sh(cmd: str, cwd: str | None = None, stdin: bytes = b"") -> bytes:
    return subprocess.run(cmd, shell=True, capture_output=True, cwd=cwd, input=stdin,
                          check=True).stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tree of files of various lengths, and a corpus of words."""
    return push_inputs(tmp_path_factory.mktemp("tree"), 8, 6, 40, 300, 400)


# ---- the paper's and slides' examples, each equal to the sequential pipeline ----

def test_find_fan_out_wc_fan_in_sort(files):
    out = push("-c", "find . -type f -name '*.txt' |<[4] xargs wc -l >| sort -rn", cwd=str(files))
    assert out.returncode == 0, out.stderr
    seq = sh("find . -type f -name '*.txt' | xargs wc -l | sort -rn", cwd=str(files))
    got = [ln for ln in out.stdout.decode().splitlines() if not ln.endswith(" total")]
    want = [ln for ln in seq.decode().splitlines() if not ln.endswith(" total")]
    assert Counter(got) == Counter(want)  # each copy of wc prints its own total line
    totals = sum(int(ln.split()[0]) for ln in out.stdout.decode().splitlines()
                 if ln.endswith(" total"))
    assert totals == sum(int(w.split()[0]) for w in want)


def test_ls_fan_out_sort_hash_uniq_fan_in(files):
    cmd = "ls d0 |< cat | sort -n -r |#| uniq >| sort -n -r"
    out = push("-c", cmd, cwd=str(files))
    assert out.returncode == 0, out.stderr
    assert out.stdout == sh("ls d0 | cat | sort -n -r | uniq | sort -n -r", cwd=str(files))


def test_word_count_as_a_mapreduce(files):
    cmd = "cat corpus |< tr -s ' ' '\\n' |#| sort | uniq -c >| sort -rn | head"
    out = push("-c", cmd, cwd=str(files))
    assert out.returncode == 0, out.stderr
    assert out.stdout == sh("cat corpus | tr -s ' ' '\\n' | sort | uniq -c | sort -rn | head",
                            cwd=str(files))


def test_nested_fan_outs_multiply_and_fan_back_in(files):
    cmd = "seq 1 2000 |<[2] cat |<[3] awk '{s+=$1} END {print s}' >| awk '{s+=$1} END {print s}' " \
          ">| awk '{s+=$1} END {print s}'"
    out = push("-c", cmd)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"2001000\n"


def test_an_open_fan_out_writes_its_copies_output_on_record_boundaries():
    out = push("-c", "seq 1 100000 |<[4] cat")
    assert out.returncode == 0
    assert sorted(out.stdout.splitlines(), key=int) == [b"%d" % i for i in range(1, 100001)]


def test_keep_gives_the_input_order_back():
    out = push("-c", "seq 1 300000 |<[4 keep] awk '{print $1 * 2}' >| cat")
    assert out.returncode == 0, out.stderr
    assert out.stdout == sh("seq 1 300000 | awk '{print $1 * 2}'")


# ---- records: never split or merged, whatever the module ----

def run_plan(text: str, data: bytes, variables: dict[str, str] | None = None) -> bytes:
    plan = make_plan(parse(text)[0].pipelines[0], variables or {}, 3)
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout:
        fin.write(data)
        fin.seek(0)
        status = LocalRun(plan, stdin=fin.fileno(), stdout=fout.fileno()).run()
        fout.seek(0)
        assert status == 0
        return fout.read()


MODULES = {
    "newline": (b"\n", {}),
    "nul": (b"\0", {"ORS": "nul"}),
    "blank": (b"\n\n", {"ORS": "blank"}),
    "fixed 8": (b"", {"ORS": "fixed 8"}),
    "regex END;": (b"END;", {"ORS": "regex END;"}),
}
record = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"x").replace(b"\0", b"y")
                                    .replace(b"END;", b"ENDx"))


@settings(max_examples=25, deadline=None)
@given(module=st.sampled_from(sorted(MODULES)), records=st.lists(record, max_size=40),
       final=st.booleans())
@example(module="newline", records=[b"", b"a" * 1_000_000, b"", b"b"], final=False)
@example(module="nul", records=[b"x" * 1_500_000, b"y"], final=True)
def test_fan_out_and_in_keep_every_record_whole(module, records, final):
    sep, variables = MODULES[module]
    if module == "fixed 8":
        records = [(r + b"........")[:8] for r in records]
        data = b"".join(records)
    elif module == "blank":
        records = [r.replace(b"\n", b"x") or b"p" for r in records]  # paragraphs hold no blank
        data = b"".join(r + sep for r in records)
    else:
        data = b"".join(r + sep for r in records)
    if not final and data and sep and data.endswith(sep):
        data = data[: -len(sep)]
    out = run_plan("cat |< cat >| cat", data, variables)
    splitter = make_plan(parse("a |< b")[0].pipelines[0], variables).edges[0].rs

    def whole(b: bytes) -> Counter[bytes]:
        rs = splitter.split(b)
        if rs and sep and not rs[-1].endswith(sep):  # the one record without a terminator
            rs[-1] += sep
        return Counter(rs)
    assert whole(out) == whole(data)


def test_last_records_without_a_separator_stay_records_when_merged():
    """Every copy ends on an unterminated record: merged, each still ends where it did."""
    data = b"".join(b"%d\n" % i for i in range(300))
    for rs, sep in (("newline", b"\n"), ("nul", b"\0")):
        cmd = (f"cat |<[1] cat |#[3]| awk '{{n++}} END {{printf \"n%d\", n}}' >|[rs={rs}] cat")
        for _ in range(3):
            out = run_plan(cmd, data).split(sep)
            assert all(re.fullmatch(rb"n\d+", r) for r in out), out
            assert sum(int(r[1:]) for r in out) == 300 and len(out) > 1
    data = b"".join(b"%d\n" % i for i in range(400000))  # several blocks of the keep region
    out = run_plan("cat |<[3 keep] awk '{n++} END {printf \"n%d\", n}' >| cat", data)
    assert len(out.split(b"\n")) > 1 and all(re.fullmatch(rb"n\d+", r) for r in out.split(b"\n"))
    assert sum(int(r[1:]) for r in out.split(b"\n")) == 400000


def test_hash_pipe_sends_equal_keys_to_one_copy():
    lines = b"".join(b"key%d %d\n" % (i % 37, i) for i in range(20000))
    out = run_plan("cat |<[3] cat |#[4]| awk '{print ENVIRON[\"BRASIL_RANK\"], $0}' >| cat", lines)
    owner: dict[bytes, bytes] = {}
    rows = out.splitlines()
    for row in rows:
        copy, key, _ = row.split()
        assert owner.setdefault(key, copy) == copy, f"{key!r} reached two copies"
    assert len(rows) == 20000 and len(set(owner.values())) > 1


def test_hash_key_by_field_and_regex():
    lines = b"".join(b"%d user=u%d\n" % (i, i % 5) for i in range(3000))
    for key in ("2", "user=(\\w+)"):
        out = run_plan(f"cat |#[3 key='{key}']| awk '{{print ENVIRON[\"BRASIL_RANK\"], $2}}'",
                       lines)
        owner: dict[bytes, bytes] = {}
        for row in out.splitlines():
            copy, k = row.split()
            assert owner.setdefault(k, copy) == copy


def test_options_keep_quoted_commas_and_brackets_and_sh_redirections_stay_sh():
    """A comma or ']' inside quotes belongs to the key or separator; 2>| is sh's, not a fan-in."""
    hashed = parse("a |#[4 key='^(.*?),']| b")[0].pipelines[0]
    assert [k.key for k in hashed.links if k.kind == "hash"] == ["^(.*?),"]
    rows = b"".join(b"%s,r%d x\n" % (who, i) for i in range(20) for who in (b"alice", b"bob"))
    out = run_plan("cat |<[2] cat |#[4 key='^(.*?),']| cut -d, -f1 | sort | uniq -c >| sort", rows)
    assert out.split() == [b"20", b"alice", b"20", b"bob"]
    out = run_plan("cat |#[2 key='([ab])']| cat", b"xa\nxb\nya\n")
    assert sorted(out.splitlines()) == [b"xa", b"xb", b"ya"]
    out = run_plan("cat |<[2 rs='regex [;,]'] cat >|[rs='regex [;,]'] cat", b"a;b,c;")
    assert sorted(out.replace(b",", b";").split(b";")) == [b"", b"a", b"b", b"c"]
    assert run_plan("cat |<[2 rs=fixed 4] cat >|[rs=fixed 4 keep] cat", b"abcdefgh") == b"abcdefgh"
    assert run_plan("sh -c 'echo err >&2; cat' 2>|/dev/null |< cat >| cat", b"x\n") == b"x\n"
    with pytest.raises(PushSyntaxError, match="needs 1 copy or more"):
        parse("a |<[0] b")


def test_subshells_groups_and_negations_are_the_shells_to_run():
    from brasil.exec.command import command_argv
    for cmd in ("(cd /tmp; pwd)", "{ echo a; }", "! false", "(echo hi)"):
        assert command_argv(cmd, os.defpath)[:2] == ["/bin/sh", "-c"], cmd
    assert run_plan("(read x; cat) | cat", b"a\nb\n") == b"b\n"
    out = push("-c", "(echo hi) | cat")
    assert (out.returncode, out.stdout) == (0, b"hi\n"), out.stderr


# ---- failures are located; nothing is left running ----

def marker_processes(marker: str) -> list[str]:
    r = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True)
    return [ln for ln in r.stdout.splitlines() if "pgrep" not in ln]


def test_a_missing_command_names_the_stage():
    out = push("-c", "seq 1 10 |< no-such-command-here >| cat")
    assert out.returncode == 127
    assert b"stage 2 `no-such-command-here` cannot start: no-such-command-here: command not " \
           b"found" in out.stderr


def test_a_copy_that_exits_early_ends_the_pipeline_with_its_stderr():
    marker = f"sleep 97{os.getpid() % 1000:03d}"
    cmd = (f"seq 1 1000000 |<[3] sh -c 'if [ $BRASIL_RANK = 0 ]; then read x; echo broken >&2; "
           f"exit 3; fi; cat' | cat >| sh -c 'cat; {marker}'")
    out = push("-c", cmd)
    assert out.returncode == 3
    err = out.stderr.decode()
    assert "stage 2" in err and "copy 1 of 3" in err and "exit status 3 before the end of its " \
        "input" in err and "broken" in err, err
    assert not marker_processes(marker)


def test_more_copies_than_open_files_allow_is_a_sentence_not_a_traceback():
    import resource
    out = subprocess.run([sys.executable, "-m", "brasil.cli.push", "-c", "seq 3 |<[500] cat >| wc -l"],
                         capture_output=True, timeout=60,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    assert out.returncode == 1 and b"Traceback" not in out.stderr
    assert b"need more open files than push may have (ulimit -n: 256" in out.stderr, out.stderr


def test_a_stage_that_closes_its_input_early_ends_upstream_quietly():
    out = push("-c", "seq 1 100000000 |<[3] cat >| head -3")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3 and out.stderr == b""
    # every record to one copy of the hash stage, which quits; the idle copy must end too
    out = push("-c", "yes |<[2] cat |#[2]| cat >| head -2", timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, b"y\ny\n", b"")


def test_syntax_errors_name_the_column_and_what_was_expected():
    out = push("-c", "seq 3 |< >| wc")
    assert out.returncode == 2
    assert b"syntax error at line 1, column 10: expected a command after '|<'" in out.stderr
    with pytest.raises(PushSyntaxError, match="'>|' has no '|<' before it"):
        parse("a >| b")
    with pytest.raises(PushSyntaxError, match="unterminated single quote"):
        parse("echo 'a |< b")
    with pytest.raises(PlanError, match="keep needs a '>|'"):
        make_plan(parse("a |<[keep] b")[0].pipelines[0], {})


# ---- the shell ----

def test_sequences_conditions_status_variables_and_scripts(tmp_path):
    script = tmp_path / "s.push"
    script.write_text("# a comment\nfalse || echo \"was $?\"\nN=3\nseq $N |< cat >| wc -l\n"
                      "true && exit 7\necho unreachable\n")
    out = push(str(script))
    assert out.returncode == 7
    assert push("-c", "exit abc").returncode == 2 and push("-c", "exit 300").returncode == 44
    assert out.stdout == b"was 1\n3\n"
    assert substitute_status("echo $? '$?' ${?}", 4) == "echo 4 '$?' 4"


def test_explain_prints_the_plan():
    out = push("--explain", "-c", "ORS=nul find . -print0 |<[4] xargs -0 ls >| sort")
    text = out.stdout.decode()
    assert "stage 2: xargs -0 ls" in text and "4 copies, on this machine" in text
    assert "records: nul" in text


def test_interactive_mode_runs_lines_and_keeps_history(tmp_path, monkeypatch):
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from brasil.cli.push import interactive
    from brasil.push.local import LocalEngine
    from brasil.push.shell import Shell
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    out = tmp_path / "out"
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        inp.send_text(f"seq 1 5 |< cat >| sort -n > {out}\nexit 3\n")
        status = interactive(Shell(LocalEngine(status=False)))
    assert status == 3
    assert out.read_text() == "1\n2\n3\n4\n5\n"
    assert "seq 1 5" in (tmp_path / "brasil" / "push_history").read_text()


def test_failed_pipelines_raise_with_the_status():
    with pytest.raises(PipelineFailed) as e:
        run_plan("cat |< sh -c 'exit 9' >| cat", b"x\n" * 100000)
    assert e.value.status == 9


def test_the_status_line_shows_copies_records_and_bytes_per_stage():
    from brasil.push.local import Stats
    from brasil.push.status import render
    plan = make_plan(parse("cat f |<[4] wc -l >| sort")[0].pipelines[0], {})
    lines = render(plan, [Stats(1, 0, 0, 0, 2_500_000, 125_000), Stats(4, 3, 2_500_000, 125_000,
                                                                       40, 4), Stats(1, 1)], 2.5)
    assert "cat f" in lines[0] and "0/1 running" in lines[0] and "out 125.0k rec, 2.5MB" in lines[0]
    assert "3/4 running" in lines[1] and "in 125.0k rec, 2.5MB" in lines[1]
    assert lines[-1] == "2.5s"


# ---- caps: copies multiply through nested fan-outs; refused before anything is built ----

NESTED_200 = "cat" + " |< cat" * 200 + " >| cat" * 200


def push_in_little_memory(*args: str) -> subprocess.CompletedProcess[bytes]:
    """push with its address space capped at 1 GiB: a plan that materialised 2^200 copies
    would die of MemoryError long before the cap on copies matters."""
    import resource
    limit = 1 << 30
    e = {k: v for k, v in os.environ.items() if k != "BRASIL"}
    return subprocess.run([sys.executable, "-m", "brasil.cli.push", *args], capture_output=True,
                          timeout=60, env=e, input=b"",
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))


@pytest.mark.parametrize("explain", [False, True], ids=["run", "explain"])
def test_200_nested_fan_outs_are_refused_at_once_with_a_sentence(explain):
    out = push_in_little_memory(*(["--explain"] if explain else []), "-c", NESTED_200)
    err = out.stderr.decode()
    assert out.returncode == 2 and "Traceback" not in err and out.stdout == b"", err
    assert "fan-outs nested 200 deep" in err and "at most 32" in err, err


def test_too_many_copies_in_all_are_refused_with_how_to_give_fewer():
    out = push_in_little_memory("--explain", "-c", "cat" + " |<[16] cat" * 5 + " >| cat" * 5)
    err = out.stderr.decode()
    assert out.returncode == 2 and "Traceback" not in err, err
    assert "would run more than 65536 copies" in err and "|<[n]" in err, err
    with pytest.raises(PlanError, match="more than 65536 copies"):
        make_plan(parse("a |<[65536] b")[0].pipelines[0], {})
    with pytest.raises(PlanError, match="more than 65536 copies"):  # the defaults multiply too
        make_plan(parse("a" + " |< b" * 17)[0].pipelines[0], {}, default_copies=2)
    with pytest.raises(PushSyntaxError, match="at most 65536 copies"):
        parse("a |<[99999999999999999999999999] b")


def test_a_legal_nested_pipeline_under_the_caps_still_runs_and_explains():
    assert make_plan(parse("a |<[65535] b")[0].pipelines[0], {}).last.copies == 65535
    deep = "seq 1 100" + " |<[1] cat" * 32 + " >| cat" * 32
    out = push("-c", deep + " | wc -l")
    assert (out.returncode, out.stdout) == (0, b"100\n"), out.stderr
    out = push("--explain", "-c", "seq 6 |<[2] cat |<[3] cat >| cat >| sort -n")
    assert out.returncode == 0 and "6 copies (2 instances of 3)" in out.stdout.decode(), out.stderr
