"""The engine's other schedules at the medium size: truncated, checkpointed, masked."""
import numpy as np
import pytest

import fastbptt

from conftest import problem


@pytest.mark.parametrize("mode", ["full", "truncate=25", "checkpoint=sqrt", "mask"])
def test_medium_modes(run_timed, mode):
    params, x, y = problem("medium")
    kw = {}
    if mode.startswith("truncate"):
        kw["truncate"] = 25
    elif mode.startswith("checkpoint"):
        kw["checkpoint"] = "sqrt"
    elif mode == "mask":
        m = np.ones(y.shape, np.float32)
        m[-10:, ::2] = 0                       # half the sequences 10 steps shorter
        kw["mask"] = m
    run_timed("medium", lambda: fastbptt.loss_and_grad(params, x, y, **kw))
