"""The README's code runs as written, and every snippet that shows an update trains.

"Trains" means: the snippet's step (from the line that computes gradients, a
``loss_and_grad(`` or ``TBPTTStream(`` line, to its last ``-=`` update), looped 30 times on
the same data, lowers the loss steadily and never blows it up. Learning rates that diverge
when a user puts the snippet in a loop fail here.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import fastbptt
from tolerances import README_LOOP_MAX_RISE, README_LOOP_MIN_DROP

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
UPDATES = [b for b in BLOCKS if "-=" in b]
STEP_START = re.compile(r"loss_and_grad\(|TBPTTStream\(")


def test_readme_example_runs():
    block = re.search(r"## Example\n\n```python\n(.*?)```", TEXT, re.S).group(1)
    scope = {}
    exec(compile(block, "README example", "exec"), scope)
    assert np.isfinite(scope["loss"]) and scope["hs"].shape == (25, 32, 128)
    assert scope["dx"].shape == (25, 32, 65) and scope["dW"].shape == (4 * 128, 128)   # the LSTM's
    assert isinstance(scope["c"], np.ndarray) and scope["dc0"].shape == (32, 128)


def _corpus_ids(n_chars, vocab):
    """A real text as ids < vocab: the built-in corpus, rarer characters folded into one id."""
    from fastbptt.corpus import stdlib_docstrings
    text = stdlib_docstrings(max_chars=n_chars)
    chars, counts = np.unique(list(text), return_counts=True)
    common = chars[np.argsort(-counts)][:vocab - 1]
    lut = {c: i for i, c in enumerate(common)}
    return np.array([lut.get(c, vocab - 1) for c in text])


def test_there_are_update_snippets():
    assert len(UPDATES) >= 2          # the example's SGD step and the stream loop


@pytest.mark.parametrize("block", UPDATES, ids=[f"snippet{i}" for i in range(len(UPDATES))])
def test_update_snippets_train_when_looped(block):
    if "torch" in block:              # the PyTorch round-trip example needs torch (not in [test])
        pytest.importorskip("torch", reason="the snippet converts to PyTorch: pip install torch")
    lines = block.splitlines()
    start = next(i for i, ln in enumerate(lines) if STEP_START.search(ln))
    end = max(i for i, ln in enumerate(lines) if "-=" in ln) + 1
    setup, step = "\n".join(lines[:start]), "\n".join(lines[start:end])
    # names a continuation snippet takes from the text around it
    scope = {"np": np, "fastbptt": fastbptt,
             "params": fastbptt.init_params(n_in=65, n_hidden=128, n_out=65, seed=0),
             "ids": _corpus_ids(10_000, 65)}
    exec(compile(setup, "README snippet setup", "exec"), scope)
    code = compile(step, "README snippet step", "exec")
    losses = []
    for _ in range(30):
        exec(code, scope)
        losses.append(float(scope["loss"]))
    losses = np.array(losses)
    if "client" in scope:             # the Dask snippet: its cluster must not outlive the test
        scope["client"].close()
        scope["client"].cluster.close()
    assert np.all(np.isfinite(losses)), losses
    assert losses.max() <= (1 + README_LOOP_MAX_RISE) * losses[0], f"the loss rose: {losses.round(3)}"
    assert losses[-5:].mean() <= (1 - README_LOOP_MIN_DROP) * losses[0], f"no progress: {losses.round(3)}"
