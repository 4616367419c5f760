"""min-char-rnn (Karpathy's gist): ``lossFun`` of a vanilla tanh RNN over one-hot characters.

As in the gist, ``lossFun`` reads the script's globals ``Wxh (H, V)``, ``Whh (H, H)``,
``Why (V, H)``, ``bh (H, 1)``, ``by (V, 1)`` and ``vocab_size`` at every call (so rebinding a
name is seen); :func:`script_namespace` gives each test its own "script globals". Column
vectors throughout; the loss is summed; the one-hot inputs are float64 whatever the
parameters' dtype (NumPy promotion then makes every state float64); gradients are clipped to
[-5, 5] in the parameters' dtypes; ``hs[0]`` fails with KeyError on empty inputs.
"""
import types

import numpy as np


def lossFun(inputs, targets, hprev):
    xs, hs, ys, ps = {}, {}, {}, {}
    hs[-1] = np.copy(hprev)
    loss = 0
    # forward, one step at a time
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))                 # noqa: F821 (a script global)
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)   # noqa: F821
        ys[t] = np.dot(Why, hs[t]) + by                   # noqa: F821
        ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))     # unshifted softmax, as the gist
        loss += -np.log(ps[t][targets[t], 0])
    # backward
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)   # noqa: F821
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)       # noqa: F821
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext                   # noqa: F821
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)                     # noqa: F821
    for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
        np.clip(dparam, -5, 5, out=dparam)
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]


def script_namespace(Wxh, Whh, Why, bh, by):
    """The gist's module globals, with its ``lossFun`` bound to them (reads them per call)."""
    ns = {"np": np, "Wxh": Wxh, "Whh": Whh, "Why": Why, "bh": bh, "by": by,
          "vocab_size": np.shape(Wxh)[1]}
    ns["lossFun"] = types.FunctionType(lossFun.__code__, ns, "lossFun")
    return ns


def make_lossfun(Wxh, Whh, Why, bh, by):
    """``lossFun`` over its own namespace holding these arrays."""
    return script_namespace(Wxh, Whh, Why, bh, by)["lossFun"]
