"""fastbptt: fast, exact backpropagation through time for NumPy recurrent networks.

``loss_and_grad`` replaces a per-step NumPy BPTT loop with one call; ``rnn_forward`` /
``rnn_backward`` are the same engine as a layer. Numba kernels compile on first use and are
cached on disk; nothing compiles at import.
"""
from .api import (gru_backward, gru_forward, init_params, loss_and_grad, lstm_backward,
                  lstm_forward, rnn_backward, rnn_forward)
from .gradcheck import gradcheck
from .prepared import make_loss_and_grad

__version__ = "0.1.0"

__all__ = ["init_params", "loss_and_grad", "make_loss_and_grad", "rnn_forward", "rnn_backward", "lstm_forward",
           "lstm_backward", "gru_forward", "gru_backward", "gradcheck", "__version__"]


def __getattr__(name):
    # submodules with optional or heavier dependencies load on first use
    import importlib
    if name in ("memory", "compat", "stream", "cuda", "engine", "reference", "cpu", "distributed"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("from_torch", "to_torch"):  # torch is imported by these functions, not here
        return getattr(importlib.import_module(".torch_io", __name__), name)
    raise AttributeError(f"module 'fastbptt' has no attribute {name!r}")
