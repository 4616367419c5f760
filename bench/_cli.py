"""What the measuring scripts in ``bench/`` share: list options, provenance and the JSON file."""
from __future__ import annotations

import json
import shlex
import sys


def parse_list(ap, name, text, allowed):
    """The comma-separated values of option ``--name``; an argparse error for anything else."""
    vals = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in vals if v not in allowed]
    if bad or not vals:
        ap.error(f"--{name}: expected a comma-separated subset of {', '.join(allowed)}; got {text!r}")
    return vals


def start(script, argv):
    """The provenance record taken before measuring (the command as the user typed it)."""
    from fastbptt.cli import measurement_metadata
    return measurement_metadata(f"python bench/{script} " + shlex.join(sys.argv[1:] if argv is None else argv))


def finish(res, meta, table, path):
    """Complete ``res`` with the provenance after measuring, print ``table``, write ``path``."""
    from fastbptt.cli import measurement_metadata
    res["meta"] = measurement_metadata(meta["command"], meta)
    print(table)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0
