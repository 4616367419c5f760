"""Text for ``fastbptt train``: the built-in corpus and the user's own files.

The default corpus needs no download and no file: it is the docstrings of a fixed list of
pure-Python standard-library modules, read from their source files with :mod:`ast` (nothing
is imported or executed), in a fixed order. It is deterministic for a given Python version
(docstrings change a little between versions) and holds a few hundred kilobytes of English
prose about programming.
"""
from __future__ import annotations

import ast
import codecs
import importlib.util
import string

# Pure-Python modules with plenty of prose in their docstrings, in the order they are read.
STDLIB_MODULES = (
    "argparse", "ast", "calendar", "collections", "configparser", "contextlib", "csv",
    "dataclasses", "datetime", "difflib", "email.message", "enum", "fractions", "functools",
    "glob", "gzip", "heapq", "http.client", "inspect", "ipaddress", "json", "json.decoder",
    "logging", "mailbox", "optparse", "os", "pathlib", "pickle", "pprint", "random", "shutil",
    "socket", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "typing", "unittest.case", "urllib.parse", "uuid", "warnings", "zipfile",
)

_KEEP = set(string.printable) - set("\t\r\x0b\x0c")   # printable ASCII, space and newline


def _module_docstrings(name: str) -> list[str]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or not origin.endswith(".py"):
        return []
    try:
        with open(origin, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=origin)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    docs = []
    # module, then classes and functions in source order (ast.walk is breadth-first, stable)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 40:             # skip one-liners like "Return self."
                docs.append(doc)
    return docs


def clean(text: str) -> str:
    """Tabs to spaces, drop characters outside printable ASCII (keeps the vocabulary ~95)."""
    text = text.replace("\t", "    ").replace("\r\n", "\n")
    return "".join(ch for ch in text if ch in _KEEP)


def stdlib_docstrings(max_chars: int | None = None) -> str:
    """The built-in corpus: standard-library docstrings, separated by blank lines.

    Parameters
    ----------
    max_chars : int, optional
        Stop after this many characters.

    Returns
    -------
    str
        Empty only if no standard-library source file could be read.
    """
    parts, total = [], 0
    for name in STDLIB_MODULES:
        for doc in _module_docstrings(name):
            doc = clean(doc).strip() + "\n\n"
            parts.append(doc)
            total += len(doc)
            if max_chars is not None and total >= max_chars:
                return "".join(parts)[:max_chars]
    return "".join(parts)


def read_text(path: str, encoding: str = "utf-8") -> str:
    """The text of the file at ``path``, with Windows line ends made ``\\n``.

    Parameters
    ----------
    path : str
        The file.
    encoding : str
        Its encoding. A UTF-8 byte-order mark is dropped.

    Returns
    -------
    str

    Raises
    ------
    OSError
        The file cannot be read.
    UnicodeDecodeError
        A byte does not decode (nothing is replaced silently); ``.start`` is its offset.
    """
    with open(path, "rb") as f:
        data = f.read()
    skip = len(codecs.BOM_UTF8) if (codecs.lookup(encoding).name == "utf-8"
                                    and data.startswith(codecs.BOM_UTF8)) else 0
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:   # offsets into the file, not past the mark
        raise UnicodeDecodeError(exc.encoding, data, exc.start + skip, exc.end + skip, exc.reason) from None
    return text.replace("\r\n", "\n")
