"""Drive a 9P server with the low-level client bundled in p9fs (package ``py9p``).

Run with the p9fs peer virtualenv's python, never ours:

    .peers/p9fs/bin/python tests/peers/p9fs_client.py HOST PORT VERSION

VERSION is ``9P2000`` or ``9P2000.u``. The server must serve the FixtureTree of tests/fixtures.py.
Each step prints one JSON line ``{"step": NAME, "ok": true, ...results}`` or
``{"step": NAME, "ok": false, "error": MESSAGE, "errno": N|null, "leftover_fid": BOOL}``; the
pytest side asserts on them. A failing step does not stop the run: the next starts from a clean fid.

Workarounds for py9p bugs (py9p as shipped in p9fs 0.0.4):
 - ``Client.lsdir`` decodes directory entries with a 9P2000 ``Marshal9P()`` whatever the dialect,
   so under 9P2000.u it misreads every entry; :func:`read_dir` decodes with the negotiated dialect.
 - ``Marshal9P.dec1`` unpacks bytes as *signed* ('b'), so QTDIR (0x80) comes back as -128: qid types
   are masked with 0xff here.
 - ``RpcError`` carries only the error string; the 9P2000.u errno is recovered by wrapping the
   connection's ``recv`` to keep the last Rerror it decoded.
 - ``Client.rm`` opens the file (OREAD) before Tremove, so removing a write-only file would fail;
   :func:`remove` walks and sends Tremove on the unopened fid instead, as the protocol intends.
"""

from __future__ import annotations

import json
import socket
import sys
import traceback

from py9p import py9p

HOST, PORT, VERSION = sys.argv[1], int(sys.argv[2]), sys.argv[3]
DOTU = VERSION == "9P2000.u"

errors_seen: list[dict] = []  # every Rerror decoded during the current step


def emit(step: str, **kw) -> None:
    print(json.dumps({"step": step, **kw}), flush=True)


def text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray)) else str(b)


def connect() -> py9p.Client:
    sock = socket.create_connection((HOST, PORT), timeout=10)
    creds = py9p.Credentials(user="interop")
    client = py9p.Client(sock, credentials=creds, ver=py9p.Version.from_str(VERSION))
    recv = client.fd.recv

    def recording_recv():
        fc = recv()
        if fc.type == py9p.Rerror:
            errors_seen.append({"ename": text(fc.ename), "errno": getattr(fc, "errno", None)})
        return fc

    client.fd.recv = recording_recv
    return client


def quiet_close(c: py9p.Client) -> bool:
    """Clunk the scratch fid F if it is live; True if it was (the server still knew it)."""
    try:
        c._clunk(c.F)
        return True
    except Exception:
        return False


def step(c: py9p.Client, name: str, fn) -> None:
    errors_seen.clear()
    try:
        res = fn(c)
    except Exception as e:  # noqa: BLE001
        msg = text(e.args[0]) if e.args else repr(e)
        errno = next((r["errno"] for r in errors_seen if r["ename"] == msg), None)
        trace = traceback.format_exc(limit=3)
        # After a failed step py9p has normally clunked F already (or the server never bound it,
        # as for a failed or partial walk, or freed it, as Tremove does even when it fails):
        # leftover_fid says whether the server still held F.
        emit(name, ok=False, error=msg, errno=errno, kind=type(e).__name__,
             leftover_fid=quiet_close(c), trace=trace)
        return
    emit(name, ok=True, **(res or {}))


def stat_dict(d) -> dict:
    return {"name": text(d.name), "mode": d.mode, "length": d.length,
            "qid_type": d.qid.type & 0xFF, "qid_path": d.qid.path, "uid": text(d.uid),
            "extension": text(getattr(d, "extension", "")) if DOTU else None,
            "n_uid": getattr(d, "uidnum", None) if DOTU else None}


def read_all(c: py9p.Client, count: int = 8192) -> bytes:
    out = b""
    while True:
        buf = c.read(count)
        if not buf:
            return out
        out += buf


def read_dir(c: py9p.Client, count: int) -> tuple[list, int]:
    """Read the open directory fid F with Treads of ``count`` bytes; returns (stats, reads)."""
    entries, reads = [], 0
    while True:
        buf = c.read(count)
        reads += 1
        if not buf:
            return entries, reads
        m = py9p.Marshal9P(dotu=1 if DOTU else 0)
        m.setBuffer(buf)
        m.buf.seek(0)
        fc = py9p.Fcall(py9p.Rstat)
        m.decstat(fc.stat, 0)
        entries += fc.stat
        if reads > 1000:
            raise RuntimeError("directory read does not end")


def read_file(c: py9p.Client, path: str) -> bytes:
    c.open(path, py9p.OREAD)
    try:
        return read_all(c)
    finally:
        c.close()


def remove(c: py9p.Client, path: str) -> None:
    c.walk(path)
    c._remove(c.F)  # Tremove clunks F whatever the outcome


# ---- the steps ----

def s_version(c):
    return {"msize": c.msize, "version": VERSION}


def s_stat_root(c):
    (st,) = c.stat("/")
    return stat_dict(st)


def s_walk_hello(c):
    qids = c.walk("/hello")
    c.close()
    return {"nqids": len(qids), "qid_type": qids[-1].type & 0xFF}


def s_walk_multi(c):
    qids = c.walk("/dir/mmm")
    c.close()
    return {"nqids": len(qids), "types": [q.type & 0xFF for q in qids]}


def s_read_hello(c):
    r = c.open("/hello", py9p.OREAD)
    data = read_all(c)
    c.close()
    return {"data": text(data), "iounit": r.iounit, "qid_type": r.qid.type & 0xFF}


def s_read_hello_offsets(c):
    c.open("/hello", py9p.OREAD)
    parts = []
    while True:
        b = c.read(4)
        if not b:
            break
        parts.append(text(b))
    c.close()
    return {"parts": parts}


def s_stat_hello(c):
    (st,) = c.stat("/hello")
    return stat_dict(st)


def s_gen(c):
    return {"first": text(read_file(c, "/gen")), "second": text(read_file(c, "/gen"))}


def s_ctl(c):
    c.open("/ctl", py9p.OWRITE)
    n = c.write(b"add 5")
    c.close()
    return {"written": n, "state": text(read_file(c, "/ctl"))}


def s_ctl_bad(c):
    c.open("/ctl", py9p.OWRITE)
    c.write(b"add five")  # py9p clunks F itself when the write fails


def s_ls_dir(c):
    c.open("/dir", py9p.OREAD)
    entries, reads = read_dir(c, 8192)
    c.close()
    return {"names": [text(e.name) for e in entries], "lengths": [e.length for e in entries],
            "reads": reads}


def s_ls_dir_small(c):
    # Small Treads: several entries per read, the offset carried from one read to the next.
    c.open("/dir", py9p.OREAD)
    entries, reads = read_dir(c, 200)
    c.close()
    return {"names": [text(e.name) for e in entries], "reads": reads}


def s_ls_dir_bundled(c):
    # py9p's own lsdir decodes as 9P2000 whatever the dialect (see the module docstring), and
    # prints a traceback to stdout when that fails: only meaningful, and only run, under 9P2000.
    if DOTU:
        return {"skipped": "py9p lsdir cannot decode 9P2000.u entries"}
    c.open("/dir", py9p.OREAD)
    entries = c.lsdir()
    c.close()
    return {"count": len(entries)}


def s_ls_root(c):
    c.open("/", py9p.OREAD)
    entries, _ = read_dir(c, 8192)
    c.close()
    return {"entries": {text(e.name): stat_dict(e) for e in entries}}


def s_stat_dir(c):
    (st,) = c.stat("/dir")
    return stat_dict(st)


def s_create_write_read(c):
    r = c.create("/tmp/interop.txt", 0o644, py9p.OWRITE)
    n1 = c.write(b"interop ")
    n2 = c.write(b"data\n")
    c.close()
    data = read_file(c, "/tmp/interop.txt")
    (st,) = c.stat("/tmp/interop.txt")
    c.open("/tmp", py9p.OREAD)
    entries, _ = read_dir(c, 8192)
    c.close()
    return {"qid_type": r.qid.type & 0xFF, "written": n1 + n2, "data": text(data),
            "stat": stat_dict(st), "ls_tmp": [text(e.name) for e in entries]}


def s_overwrite_trunc(c):
    c.open("/tmp/interop.txt", py9p.OWRITE | py9p.OTRUNC)
    c.write(b"short")
    c.close()
    return {"data": text(read_file(c, "/tmp/interop.txt"))}


def s_remove(c):
    remove(c, "/tmp/interop.txt")
    c.open("/tmp", py9p.OREAD)
    entries, _ = read_dir(c, 8192)
    c.close()
    return {"ls_tmp": [text(e.name) for e in entries]}


def s_walk_removed(c):
    c.walk("/tmp/interop.txt")


def s_create_remove_bundled(c):
    # The bundled rm (open then Tremove) on a freshly created file.
    c.create("/tmp/second", 0o600, py9p.OWRITE)
    c.write(b"x")
    c.close()
    c.rm("/tmp/second")
    c.open("/tmp", py9p.OREAD)
    entries, _ = read_dir(c, 8192)
    c.close()
    return {"ls_tmp": [text(e.name) for e in entries]}


def s_mkdir(c):
    r = c.create("/tmp/sub", py9p.DMDIR | 0o755, py9p.OREAD)
    c.close()
    c.create("/tmp/sub/inner", 0o644, py9p.OWRITE)
    c.write(b"nested")
    c.close()
    data = read_file(c, "/tmp/sub/inner")
    remove(c, "/tmp/sub/inner")
    remove(c, "/tmp/sub")
    return {"qid_type": r.qid.type & 0xFF, "data": text(data)}


def s_err_missing(c):
    c.walk("/missing")


def s_err_missing_deep(c):
    c.walk("/dir/nothere")  # partial walk: one qid of two


def s_after_partial_walk(c):
    # After an incomplete walk the newfid must not exist: py9p reuses the same newfid now.
    qids = c.walk("/hello")
    c.close()
    return {"nqids": len(qids)}


def s_err_create_ro(c):
    c.create("/ro/nope", 0o644, py9p.OWRITE)


def s_err_write_readonly(c):
    c.open("/hello", py9p.OWRITE)


def s_err_open_dir_write(c):
    c.open("/dir", py9p.OWRITE)


def s_err_clunk_unknown(c):
    c._clunk(4242)


def s_err_remove_static(c):
    remove(c, "/hello")


def s_still_there(c):
    return {"data": text(read_file(c, "/hello"))}


STEPS = [
    ("version", s_version), ("stat_root", s_stat_root), ("walk_hello", s_walk_hello),
    ("walk_multi", s_walk_multi), ("read_hello", s_read_hello),
    ("read_hello_offsets", s_read_hello_offsets), ("stat_hello", s_stat_hello), ("gen", s_gen),
    ("ctl", s_ctl), ("ctl_bad", s_ctl_bad), ("ls_dir", s_ls_dir), ("ls_dir_small", s_ls_dir_small),
    ("ls_dir_bundled", s_ls_dir_bundled), ("ls_root", s_ls_root), ("stat_dir", s_stat_dir),
    ("create_write_read", s_create_write_read), ("overwrite_trunc", s_overwrite_trunc),
    ("remove", s_remove), ("walk_removed", s_walk_removed),
    ("create_remove_bundled", s_create_remove_bundled), ("mkdir", s_mkdir),
    ("err_missing", s_err_missing), ("err_missing_deep", s_err_missing_deep),
    ("after_partial_walk", s_after_partial_walk), ("err_create_ro", s_err_create_ro),
    ("err_write_readonly", s_err_write_readonly), ("err_open_dir_write", s_err_open_dir_write),
    ("err_clunk_unknown", s_err_clunk_unknown), ("err_remove_static", s_err_remove_static),
    ("still_there", s_still_there),
]


def main() -> int:
    try:
        c = connect()
    except Exception as e:  # noqa: BLE001
        emit("connect", ok=False, error=repr(e), errno=None, trace=traceback.format_exc())
        return 1
    emit("connect", ok=True)
    for name, fn in STEPS:
        step(c, name, fn)
    try:
        c._fullclose()
        emit("close", ok=True)
    except Exception as e:  # noqa: BLE001
        emit("close", ok=False, error=repr(e), errno=None)
    emit("done", ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
