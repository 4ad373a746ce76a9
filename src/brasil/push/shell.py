"""Running PUSH text: statements in order, ``&&`` and ``||``, ``$?``, variables, a few builtins.

Each pipeline runs on an engine: this machine's (``local``) or the cluster's (``remote``, when
a daemon is named by ``--at`` or ``$BRASIL``). A statement of assignments alone sets variables:
``IRS``, ``ORS`` and ``KEY`` configure the pipelines that follow, and every variable is put in
the commands' environment, so ``N=4`` then ``seq $N`` works as in a shell. ``cd``, ``exit`` and
``export`` are builtins (a child shell could not change push itself). ``$?`` is the last
pipeline's status, replaced in the command text before /bin/sh sees it.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import Protocol

from .plan import Plan, PlanError, make_plan
from .syntax import ASSIGNMENT, Pipeline, PushSyntaxError, Stage, parse


class Engine(Protocol):
    def default_copies(self) -> int: ...
    def run(self, plan: Plan) -> int: ...
    def explain(self, plan: Plan) -> str: ...


class ExitShell(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def substitute_status(text: str, status: int) -> str:
    """``$?`` and ``${?}`` outside single quotes become the last status."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            j = text.find("'", i + 1)
            j = n if j < 0 else j + 1
            out.append(text[i:j])
            i = j
            continue
        if c == "\\" and i + 1 < n:
            out.append(text[i:i + 2])
            i += 2
            continue
        if text.startswith("$?", i):
            out.append(str(status))
            i += 2
            continue
        if text.startswith("${?}", i):
            out.append(str(status))
            i += 4
            continue
        out.append(c)
        i += 1
    return "".join(out)


class Shell:
    def __init__(self, engine: Engine, explain: bool = False,
                 err: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.explain = explain
        self.status = 0
        self.variables: dict[str, str] = {}
        self.err = err or (lambda msg: print(msg, file=sys.stderr))

    def run_text(self, text: str) -> int:
        """Run every statement; the status of the last pipeline run."""
        try:
            statements = parse(text)
        except PushSyntaxError as e:
            self.err(f"push: {e}")
            self.status = 2
            return 2
        for st in statements:
            if st.assign:
                self.variables.update(st.assign)
                continue
            run_next = True
            for i, p in enumerate(st.pipelines):
                if run_next:
                    self.status = self.run_pipeline(p)
                if i < len(st.ops):
                    ok = self.status == 0
                    run_next = ok if st.ops[i] == "&&" else not ok
        return self.status

    def run_pipeline(self, p: Pipeline) -> int:
        stages = [Stage(substitute_status(s.text, self.status), s.offset) for s in p.stages]
        p = Pipeline(stages, p.links, p.assign, p.offset)
        if not p.links:
            done = self._builtin(stages[0].text)
            if done is not None:
                return done
        try:
            plan = make_plan(p, self.variables, self.engine.default_copies())
        except PlanError as e:
            self.err(f"push: {e}")
            return 2
        plan.env = {**self.variables, **plan.env}
        if self.explain:
            print(self.engine.explain(plan))
            return 0
        return self.engine.run(plan)

    def _builtin(self, text: str) -> int | None:
        try:
            words = shlex.split(text)
        except ValueError:
            return None
        if not words:
            return None
        if all(ASSIGNMENT.match(w) for w in words):
            for w in words:
                k, _, v = w.partition("=")
                self.variables[k] = v
            return 0
        cmd, args = words[0], words[1:]
        if cmd == "cd":
            target = os.path.expanduser(args[0] if args else "~")
            try:
                os.chdir(target)
            except OSError as e:
                self.err(f"push: cd: {target}: {e.strerror}")
                return 1
            return 0
        if cmd == "exit":
            if args and not re.fullmatch(r"\d+", args[0]):
                print(f"push: exit: {args[0]!r}: give a number (0-255)", file=sys.stderr)
                raise ExitShell(2)  # as sh does
            raise ExitShell(int(args[0]) % 256 if args else self.status)
        if cmd == "export":
            for w in args:
                k, eq, v = w.partition("=")
                if eq:
                    self.variables[k] = v
                os.environ[k] = self.variables.get(k, os.environ.get(k, ""))
            return 0
        return None
