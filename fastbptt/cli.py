"""The ``fastbptt`` command (also ``python -m fastbptt``).

Each subcommand lives in its own module, imported only when it runs, and exposes
``configure_parser(parser)`` and ``main(args) -> int``. Errors the user can fix raise
:class:`CLIError`: one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "train": ("fastbptt.train", "train a character-level language model (the main job)"),
    "bench": ("fastbptt.bench", "benchmark against the NumPy reference, PyTorch and JAX"),
    "memprofile": ("fastbptt.memory", "memory, time and gradient error against the BPTT interval"),
}


class CLIError(Exception):
    """A bad argument or input file: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise CLIError(f"{self.prog}: {message}")


def build_parser():
    parser = _Parser(prog="fastbptt", description="Fast, exact BPTT for NumPy RNNs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = {}
    for name, (modname, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:  # a module not written yet, or a missing optional extra
            sp.set_defaults(_missing=f"{name} is unavailable: {exc}")
            continue
        mod.configure_parser(sp)
        modules[name] = mod
    return parser, modules


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser, modules = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "_missing", None):
            raise CLIError(args._missing)
        return int(modules[args.command].main(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
