"""The README's Guarantees section names tests that exist."""
from __future__ import annotations

import re

from robust_util import ROOT


def test_every_test_named_in_the_guarantees_exists():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("<!-- section:guarantees -->")[1].split("<!-- /section:guarantees -->")[0]
    names = set(re.findall(r"\b(test_[A-Za-z0-9_]+)\b", section))     # functions and modules
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    defined = set(re.findall(r"^\s*def (test_[A-Za-z0-9_]+)", sources, flags=re.M))
    modules = {p.stem for p in (ROOT / "tests").rglob("test_*.py")}
    missing = sorted(n for n in names if n not in defined and n not in modules)
    assert len(names) > 20 and not missing, missing
