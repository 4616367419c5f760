"""The README's example runs as written."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(block, "README example", "exec"), scope)
    assert np.isfinite(scope["loss"]) and scope["hs"].shape == (25, 32, 128)
    assert scope["dx"].shape == (25, 32, 65) and scope["dW"].shape == (128, 128)
