"""``minference-compile`` command line: one sub-command per module, imported only when used.

    minference-compile fetch smollm2          # minference_compile.fetch
    minference-compile eval MODEL ...         # minference_compile.eval.cli
    minference-compile search MODEL ...       # minference_compile.search.cli
    minference-compile explain MODEL ...      # minference_compile.search.viz
    minference-compile viz MODEL ...          # minference_compile.search.viz

Each module defines ``add_arguments(parser)`` and ``run(args) -> int | None``; ``describe`` is its
one-line help. A module that is not present (an optional part not installed) is not listed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# name -> (module, attribute prefix): "" means add_arguments/run; "explain_" means explain_add_arguments/...
COMMANDS = {
    "fetch": ("minference_compile.fetch", ""),
    "eval": ("minference_compile.eval.cli", ""),
    "search": ("minference_compile.search.cli", ""),
    "explain": ("minference_compile.search.viz", "explain_"),
    "viz": ("minference_compile.search.viz", "viz_"),
}


def _load(name: str):
    module, prefix = COMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return None
        raise
    add, run = getattr(mod, prefix + "add_arguments", None), getattr(mod, prefix + "run", None)
    if add is None or run is None:
        return None
    return add, run, getattr(mod, prefix + "describe", "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="minference-compile", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    runners = {}
    for name in COMMANDS:
        found = _load(name)
        if found is None:
            continue
        add, run, describe = found
        p = sub.add_parser(name, help=describe, description=describe)
        add(p)
        runners[name] = run
    args = ap.parse_args(argv)
    return int(runners[args.command](args) or 0)


if __name__ == "__main__":
    sys.exit(main())
