"""Compose fastbptt's RNN layer with your own NumPy layers: dense -> RNN -> dense (seed 004).

    z_t = relu(x_t P + p)        prior dense layer    [T, B, D] -> [T, B, I]
    h_t = tanh(z_t Uᵀ + h_{t-1} Wᵀ + b)   fastbptt.rnn_forward
    y_t = h_t Q + q              post dense layer     [T, B, H] -> [T, B, K]
    L   = ½ Σ ‖y_t − target_t‖²

The dense layers' forward and backward are plain NumPy over all T·B rows at once;
``rnn_backward`` adds the recurrent path. The script checks every gradient against float64
finite differences (fastbptt.gradcheck) and exits non-zero if any is off.

Run: python examples/dense_rnn_dense.py
"""
import sys

import numpy as np

import fastbptt

T, B, D, I, H, K = 12, 4, 5, 8, 16, 3
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, D))
target = rng.standard_normal((T, B, K))
params = {
    "P": rng.standard_normal((D, I)) / np.sqrt(D), "p": np.zeros(I),
    "U": rng.standard_normal((H, I)) / np.sqrt(I), "W": rng.standard_normal((H, H)) / np.sqrt(H),
    "b": np.zeros(H),
    "Q": rng.standard_normal((H, K)) / np.sqrt(H), "q": np.zeros(K),
}


def loss_and_grads(prm):
    # forward
    za = x @ prm["P"] + prm["p"]                     # [T, B, I]
    z = np.maximum(za, 0)
    hs, cache = fastbptt.rnn_forward(z, None, prm["U"], prm["W"], prm["b"])   # [T, B, H]
    y = hs @ prm["Q"] + prm["q"]                     # [T, B, K]
    diff = y - target
    loss = 0.5 * np.sum(diff * diff)
    # backward: post layer, RNN (recurrence inside), prior layer
    dy = diff                                        # [T, B, K]
    dQ = hs.reshape(-1, H).T @ dy.reshape(-1, K)
    dq = dy.sum(axis=(0, 1))
    dhs = dy @ prm["Q"].T                            # ∂L/∂h_t from the layer above
    dz, dh0, dU, dW, db = fastbptt.rnn_backward(dhs, cache)
    dza = dz * (za > 0)
    dP = x.reshape(-1, D).T @ dza.reshape(-1, I)
    dp = dza.sum(axis=(0, 1))
    return loss, {"P": dP, "p": dp, "U": dU, "W": dW, "b": db, "Q": dQ, "q": dq}


def main():
    loss, _ = loss_and_grads(params)
    result = fastbptt.gradcheck(loss_and_grads, params, directions=3, elements=8, seed=0)
    print(f"loss {loss:.6f}; worst relative gradient error {result.max_rel_error:.2e} ({result.worst})")
    if not result.max_rel_error < 1e-6:
        print("gradient check FAILED", file=sys.stderr)
        return 1
    print("gradient check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
