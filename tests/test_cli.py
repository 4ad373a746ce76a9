"""The command line as a newcomer meets it (issue 7, "newcomer friction")."""

from __future__ import annotations

from fixtures import daemon
from helpers import run_cli


async def test_write_takes_everything_after_the_path_as_text_dashes_included(tmp_path):
    async with daemon(str(tmp_path)) as d:
        at = ("--at", f"unix:{d.unix.path}")
        rc, sid, err = await run_cli("cat", *at, "/csrv/local/clone")
        sid = sid.strip()
        rc, out, err = await run_cli("write", *at, f"/csrv/local/{sid}/ctl", "exec", "wc", "-c")
        assert rc == 0, err
        rc, out, err = await run_cli("write", *at, f"/csrv/local/{sid}/stdin", "-n", "hello")
        rc, out, err = await run_cli("cat", *at, f"/csrv/local/{sid}/stdout")
        assert out.split() == [str(len("-n hello\n"))]


async def test_cat_of_a_directory_lists_it(tmp_path):
    async with daemon(str(tmp_path)) as d:
        rc, out, err = await run_cli("cat", "--at", f"unix:{d.unix.path}", "/csrv/local")
        assert rc == 0 and "clone" in out.split() and "\0" not in out, out


async def test_a_missing_secret_names_the_fix(tmp_path):
    async with daemon(str(tmp_path), secret=b"a cluster secret of enough length") as d:
        rc, out, err = await run_cli("cat", "--at", str(d.tcp), "/csrv/local/arch",
                                     env={"BRASIL_SECRET_FILE": ""})
        assert rc == 1 and "--secret-file" in err and "BRASIL_SECRET_FILE" in err, err


async def test_a_bad_address_says_which_and_the_accepted_forms():
    rc, out, err = await run_cli("cat", "--at", "foo:bar:baz", "/csrv/local/arch")
    assert rc == 1 and "'foo:bar:baz' is not an address" in err and "HOST:PORT" in err, err
    rc, out, err = await run_cli("cat", "--at", "no-such-host.invalid:1", "/x")
    assert rc == 1 and "cannot resolve host 'no-such-host.invalid'" in err, err


async def test_version():
    rc, out, err = await run_cli("--version")
    assert rc == 0 and out.startswith("brasil ")


async def test_readme_examples_work_on_a_two_slot_node(tmp_path):
    """The README's two session examples, as written, on a node with 2 slots."""
    import re
    readme = open(__file__.rsplit("/tests/", 1)[0] + "/README.md").read()
    block = readme.split("The Brasil paper's examples, through a mount:")[1].split("\n\n")[1]
    lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    async with daemon(str(tmp_path), slots=2) as d:
        at = ("--at", f"unix:{d.unix.path}")
        s = ""
        for line in lines:  # `echo "X" > ~/mnt/P`, `cat ~/mnt/P`, `s=$(cat ~/mnt/P)`
            line = line.replace("$s", s)
            m = re.fullmatch(r'echo "(.*)" > ~/mnt(/\S+)', line)
            if m:
                rc, out, err = await run_cli("write", *at, m.group(2), *m.group(1).split())
            else:
                m = re.fullmatch(r"(s=\$\()?cat ~/mnt(/\S+?)\)?", line)
                assert m, line
                rc, out, err = await run_cli("cat", *at, m.group(2))
                if m.group(1):
                    s = out.strip()
            assert rc == 0, (line, err)
