"""Drop-in replacements for the gradient code of NumPy RNN scripts people actually run.

Each adapter keeps the original's signature, shapes and return values and computes the same
numbers with fastbptt's compiled engine (backend ``"cpu"``):

* :func:`min_char_rnn` — ``lossFun`` of Karpathy's min-char-rnn gist;
* :mod:`fastbptt.compat.cs231n` — ``rnn_forward`` / ``rnn_backward`` / ``lstm_forward`` /
  ``lstm_backward`` of CS231n's ``rnn_layers``;
* :mod:`fastbptt.compat.wildml` — ``bptt`` of the WildML RNN tutorial's ``RNNNumpy``;
* :mod:`fastbptt.compat.coursera` — the sequence functions of the deep-learning
  specialization's "Building your Recurrent Neural Network - Step by Step" (RNN and LSTM);
* :mod:`fastbptt.compat.karpathy_lstm` — ``LSTM`` of Karpathy's batched LSTM gist.

The adapters only map layouts (column vectors and ``(in, out)`` weights to fastbptt's
row-major, PyTorch-style layout) and reproduce the originals' NumPy behaviour: dtypes in and
out, promotion, Python-style negative ids and the originals' exception types. They never
modify the caller's arrays.
"""
from . import coursera, cs231n, karpathy_lstm, wildml
from .min_char_rnn import min_char_rnn

__all__ = ["min_char_rnn", "cs231n", "wildml", "coursera", "karpathy_lstm"]
