"""`push`: the PUSH dataflow shell (SPEC.md §5).

    push -c 'find . -type f |< xargs wc -l >| sort -rn'
    push script.push
    push                 # interactive: line editing, history, file-name completion

Pipelines run on this machine, or across the cluster when a daemon is named (``--at ADDR`` or
``$BRASIL``; ``--local`` keeps them here).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .options import add_client_options

DESCRIPTION = """PUSH: a shell for pipelines of ordinary programs, whose pipes fan out, fan in and
hash across copies, on this machine or across a Brasil cluster.

operators (between commands; everything else is /bin/sh's):
  A | B          a plain pipe
  A |< B         fan-out: A's records go to copies of B (|<[n] for n copies; default: one per
                 core here, or a share of the cluster's free slots), each block of records to
                 whichever copy has room
  A >| B         fan-in: the copies' outputs merged into B on record boundaries
                 (>|[keep] keeps the input order: the region then runs once per block)
  A |#| B        hash pipe: every record of every copy of A goes to the copy of B its key hashes
                 to, so equal keys meet (|#[n]| for n copies; key: the first field)
  ; && || #      sequences, conditions, comments; $? is the last status

records: IRS / ORS variables, or rs=… in an operator's brackets: newline (default), nul, blank,
'fixed N', 'regex RE', or a Python class MODULE:CLASS. KEY=N (a field) or KEY=REGEX for |#|.
  ORS=nul find . -type f -print0 |<[4] xargs -0 wc -l >| sort -rn
  cat corpus |< tr -s ' ' '\\n' |#[8 key=1]| sort | uniq -c >| sort -rn | head"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="push", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", dest="command", metavar="PIPELINE", help="run PIPELINE and exit")
    p.add_argument("script", nargs="?", metavar="SCRIPT", help="run the statements in SCRIPT")
    add_client_options(p, "run on the cluster whose daemon is at ADDR (default: $BRASIL; "
                       "none: this machine)")
    p.add_argument("--local", action="store_true", help="run here even if $BRASIL is set")
    p.add_argument("--explain", action="store_true", help="print each pipeline's plan (stages, "
                   "copies, record modules, where each copy runs) instead of running it")
    p.add_argument("--status", choices=("auto", "on", "off"), default="auto",
                   help="the live status line per stage, on stderr (auto: when stderr is a "
                   "terminal); it never shares a line with the output")
    return p


def make_engine(args: argparse.Namespace):
    status = {"auto": None, "on": True, "off": False}[args.status]
    at = args.at or (None if args.local else os.environ.get("BRASIL"))
    if at:
        from ..push.cluster import ClusterEngine
        secret = args.secret_file or os.environ.get("BRASIL_SECRET_FILE")
        return ClusterEngine(at, secret, status=status)
    from ..push.local import LocalEngine
    return LocalEngine(status)


def interactive(shell) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import PathCompleter, WordCompleter, merge_completers
    from prompt_toolkit.history import FileHistory

    from ..ninep.private import private_dir
    from .serve import state_dir
    history = FileHistory(os.path.join(private_dir(state_dir(None), "state directory"),
                                       "push_history"))
    words = WordCompleter(["|<", ">|", "|#|", "IRS=", "ORS=", "KEY=", "cd", "exit", "export"])
    session: PromptSession[str] = PromptSession(
        history=history, completer=merge_completers([PathCompleter(expanduser=True), words]),
        complete_while_typing=False)
    from ..push.shell import ExitShell
    while True:
        try:
            text = session.prompt(f"push{'' if shell.status == 0 else f' [{shell.status}]'}> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return shell.status
        try:
            shell.run_text(text)
        except ExitShell as e:
            return e.status


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # stopped from outside: clean up as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    from ..allocator import keep_buffers
    keep_buffers()  # its pipes are read a MiB at a time (push/local.py)
    from ..push.shell import ExitShell, Shell
    try:
        engine = make_engine(args)
    except Exception as e:  # noqa: BLE001 - a bad address or secret: say it, no traceback
        print(f"push: {e}", file=sys.stderr)
        return 2
    shell = Shell(engine, explain=args.explain)
    try:
        if args.command is not None:
            return shell.run_text(args.command)
        if args.script:
            try:
                with open(args.script) as f:
                    text = f.read()
            except OSError as e:
                print(f"push: {args.script}: {e.strerror}", file=sys.stderr)
                return 2
            return shell.run_text(text)
        if not sys.stdin.isatty():
            return shell.run_text(sys.stdin.read())
        return interactive(shell)
    except ExitShell as e:
        return e.status
    except KeyboardInterrupt:
        return 130
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()


if __name__ == "__main__":
    sys.exit(main())
