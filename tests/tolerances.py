"""Every numerical tolerance the tests use, in one place.

rtol/atol pairs are for ``np.testing.assert_allclose``. Change one here only with a reason
written next to it.
"""
# Numba CPU (and every other exact fast path) against the NumPy reference, float64:
# same math, different summation order.
EXACT64 = dict(rtol=1e-10, atol=1e-12)
# float32 fast paths against the float32 reference (T up to ~50, H up to ~64).
EXACT32 = dict(rtol=2e-4, atol=2e-5)
# Checkpointed against full BPTT, float64: same operations in the same order, except
# that weight gradients are summed per segment.
CHECKPOINT64 = dict(rtol=1e-12, atol=1e-13)
# Analytic gradients against float64 central differences (worst relative error).
FINITE_DIFF = 1e-6
# Against torch.autograd on the same model, float64.
TORCH64 = dict(rtol=1e-9, atol=1e-11)
# Adapters against re-implementations of the original scripts, float64.
ADAPTER64 = dict(rtol=1e-9, atol=1e-12)
# CUDA (simulator or GPU) against the CPU backend.
CUDA64 = dict(rtol=1e-9, atol=1e-11)
CUDA32 = dict(rtol=2e-4, atol=2e-5)
# float32 against float64 on long sequences (T = 10,000, B = 4, H = 32, init_params' scale,
# tanh, reduction="mean"); measured worst 2.6e-8 (loss), 6.2e-6 (gradient, relative to the
# largest entry of that gradient), 4.7e-7 (h_last): about 15x margin. Chaotic weights
# (spectral radius of W well above 1) amplify rounding in any float32 RNN and are excluded.
LONG32_LOSS_RTOL = 1e-6
LONG32_GRAD = 1e-4          # max |g32 - g64| / max |g64|, per gradient
LONG32_H_ATOL = 1e-5
# Stacked/bidirectional models against torch.autograd, float64: the rtol 1e-10; atol
# for entries that cancel to ~0 (sizes T ≤ 6, H ≤ 5, values O(1)).
TORCH_LAYERS64 = dict(rtol=1e-10, atol=1e-12)
