"""The ``fastbptt`` command (also ``python -m fastbptt``).

Each subcommand lives in its own module, imported only when it runs, and exposes
``configure_parser(parser)`` and ``main(args) -> int``. Errors the user can fix raise
:class:`CLIError`: one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
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


def int_at_least(lo: int):
    """An argparse ``type``: an integer >= ``lo``, with a message saying so otherwise."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}; got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}; got {v}")
        return v
    parse.__name__ = "int"
    return parse


def one_line(text: str) -> str:
    """``text`` with line breaks, control characters and surrogates escaped as in a repr."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def plural(n: int, word: str) -> str:
    """``"1 character"``, ``"2 characters"``, ``"1,000 steps"``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def check_output_path(option: str, path: str) -> None:
    """Raise CLIError now, before any work, if ``path`` cannot be written as an output file."""
    full = os.path.abspath(path)
    d = os.path.dirname(full)
    if os.path.isdir(full):
        raise CLIError(f"{option} {path}: is a directory, expected a file name")
    if not os.path.isdir(d):
        raise CLIError(f"{option} {path}: directory {d} does not exist")
    if not os.access(d, os.W_OK | os.X_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
        raise CLIError(f"{option} {path}: not writable")


# environment variables that change a timing (threads, BLAS, a cold or warm compile cache)
THREAD_ENV = ("FASTBPTT_BLAS", "FASTBPTT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR")


def measurement_metadata(command: str, started: dict | None = None) -> dict:
    """Where and when a figure was measured, for the JSON a measuring command writes.

    Call once before measuring (``started``) and once after; the load averages of both calls
    are kept, since figures taken on a shared machine depend on them.
    """
    import platform
    import time

    from .bench import _versions, cpu_model, n_cores
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    env = {k: os.environ[k] for k in THREAD_ENV if k in os.environ}
    if env and started is None:     # a command line reproduces the run only with these
        command = " ".join(f"{k}={v}" for k, v in env.items()) + " " + command
    meta = dict(command=command, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                load_average_1_5_15=load, cpu=cpu_model(), cores=n_cores(),
                python=platform.python_version(), versions=_versions())
    if started is not None:
        meta = dict(started, load_average_at_end=load, finished=meta["date"])
    return meta


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``fastbptt`` parser and the subcommand modules that loaded."""
    from . import __version__
    parser = _Parser(prog="fastbptt", description="Fast, exact BPTT for NumPy RNNs.")
    parser.add_argument("--version", action="version", version=f"fastbptt {__version__}")
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser, modules = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "_missing", None):
            raise CLIError(args._missing)
        args.command_line = "fastbptt " + shlex.join(argv)   # for the JSON a command writes
        return int(modules[args.command].main(args) or 0)
    except CLIError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except MemoryError as exc:      # sizes the checks above could not foresee
        print(f"error: out of memory: {exc or 'an allocation failed'}; try smaller sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:       # --help and --version print and exit 0
        return exc.code if isinstance(exc.code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
