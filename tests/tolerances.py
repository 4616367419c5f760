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
# Adapters against the originals when a float32 operand makes the original step in float32:
# the same float32 operations in another summation order (and the originals' float64 parts
# against fastbptt's float32 input projection).
ADAPTER32 = dict(rtol=2e-4, atol=2e-5)
# ... and when a float64 gradient is stored in a float16 parameter's dtype, as the original
# does: float16 has 11 significant bits.
ADAPTER16 = dict(rtol=2e-3, atol=2e-3)
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
# LSTM/GRU (loss_and_grad and the layer API) against torch.nn modules, float64: the
# contract's own figure (rtol 1e-10); atol covers gradients that cancel to ~1e-15.
CELLS_TORCH64 = dict(rtol=1e-10, atol=1e-12)
# The float32 fast tanh (fastbptt.cpu.tanh_f32) against float64 tanh rounded to float32, in
# ulps, for |x| <= 1e-3 including subnormals: its rational form is p/q ≈ 1 - 1.3e-7 at 0, so
# tiny inputs come out up to 2 ulps low; measured worst 3 (near 1e-3), subnormals exact.
# Before v·(p/q) replaced (v·p)/q, inputs near 1e-38 were ~100 ulps off.
TANH32_ULP = 4
# README update snippets looped 30 times on the same data: the last 5 losses average at least
# this fraction below the first (measured 4.20 -> 3.66 nats, -13%, for the SGD example; the
# stream loop falls by more). A diverging learning rate raises the loss instead.
README_LOOP_MIN_DROP = 0.05
# memory.estimate against the tracemalloc peak at the README's memprofile sizes (T = 1000,
# B = 32, H = 256, vocabulary 256), k >= 8: measured within 0.8% with the batch split across
# two cores (k = 4: 3.1%; whole, 2.5%); the README states 3%.
ESTIMATE_README_REL = 0.03
# ... and at small sizes (a few hundred KiB in all), where a few KiB of fixed overhead the
# estimate does not model count: measured within 4.2% of the total, 6.6% of the part that
# scales with time.
ESTIMATE_SMALL_REL = 0.10
# ... and no loss along the way exceeds the first by more than this: the stream loop's loss is
# its pass's last interval, noisy by a few percent (measured +3.6% at pass 2); a diverging rate
# multiplies it (0.01 with reduction="sum" took 4.2 to 141 nats).
README_LOOP_MAX_RISE = 0.10
# Data-parallel (fastbptt.distributed) against the single-process call, float64: per-shard
# sums added in a tree and divided once for "mean", instead of one pass with 1/n weights.
DISTRIBUTED64 = dict(rtol=1e-12, atol=1e-14)
# `fastbptt train --workers N` against the single-process run, float64 losses: the step's
# gradient differs in the last bits (above) and Adam carries that through the steps.
DISTRIBUTED_TRAIN64 = dict(rtol=1e-9, atol=0)
# Stacked/bidirectional models against torch.autograd, float64: the rtol 1e-10; atol
# for entries that cancel to ~0 (sizes T ≤ 6, H ≤ 5, values O(1)).
TORCH_LAYERS64 = dict(rtol=1e-10, atol=1e-12)
# The float64 straight-line exp/tanh/sigmoid (fastbptt.cpu.activations.exp_f64, tanh_f64,
# sigmoid_f64) against long-double NumPy, in float64 ulps (fractional): measured worst 1.62
# (exp), 1.25 (tanh), 2.28 (sigmoid: e^-x, the sum and the division each round) over
# [-745, 710], subnormal inputs included.
F64_ACT_ULP = 3
