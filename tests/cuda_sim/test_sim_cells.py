"""The LSTM and GRU kernels of the CUDA backend, under the simulator, against a NumPy
implementation of the cell contract's layout and pointwise equations written here.

The layout (docs: state rows, delta rows, the delta-state buffer) is exercised through each
cell module's ``forward``/``backward`` launchers, once on the per-step path (tiled product +
pointwise kernel) and once on the persistent path (one block, W in shared memory). The NumPy
backward is itself checked against float64 central differences of the NumPy forward, so the
test cannot pass with a wrong derivation shared by both.
"""
from types import SimpleNamespace

import numpy as np
import pytest
from numba import cuda

from fastbptt.cuda import config, gru, lstm
from fastbptt.cuda.device import Device
from tolerances import CUDA32, CUDA64, FINITE_DIFF


def spec(cell):
    from fastbptt.cells import CELLS
    return CELLS[cell]


def sig(a):
    return 1 / (1 + np.exp(-a))


# --------------------------------------------------------------------------- NumPy contract
def lstm_forward(pre, W, h0, c0):
    """rows [n+1, B, 6H] = [h | c | i f g o]; z = pre_t + h_{t-1} Wᵀ."""
    n, B, GH = pre.shape
    H = GH // 4
    rows = np.zeros((n + 1, B, 6 * H))
    rows[0, :, :H], rows[0, :, H:2 * H] = h0, c0
    for t in range(n):
        h, c = rows[t, :, :H], rows[t, :, H:2 * H]
        z = pre[t] + h @ W.T
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c = f * c + i * g
        rows[t + 1] = np.concatenate([o * np.tanh(c), c, i, f, g, o], axis=1)
    return rows


def lstm_backward(dhe, inj0, rows, W, dstate):
    """delta [n, B, 4H] and dstate [B, 2H] after the first step (the contract's equations)."""
    n = rows.shape[0] - 1
    H = W.shape[1]
    dstate = dstate.copy()
    delta = np.zeros((n, rows.shape[1], 4 * H))
    for t in range(n - 1, -1, -1):
        if t >= inj0:
            dstate[:, :H] += dhe[t - inj0]
        dh, dc = dstate[:, :H], dstate[:, H:]
        r = rows[t + 1]
        c, i, f, g, o = (r[:, k * H:(k + 1) * H] for k in range(1, 6))
        tc = np.tanh(c)
        do = dh * tc
        dct = dc + dh * o * (1 - tc ** 2)
        di, dg, df = dct * g, dct * i, dct * rows[t, :, H:2 * H]
        delta[t] = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2),
                                   do * o * (1 - o)], axis=1)
        dstate = np.concatenate([np.zeros_like(dh), dct * f], axis=1)
        dstate[:, :H] += delta[t] @ W
    return delta, dstate


def gru_forward(pre, W, bn, h0):
    """rows [n+1, B, 5H] = [h | r z n | hn]; pre_t = x Uᵀ + b (input side only)."""
    n, B, GH = pre.shape
    H = GH // 3
    rows = np.zeros((n + 1, B, 5 * H))
    rows[0, :, :H] = h0
    for t in range(n):
        h = rows[t, :, :H]
        rec = h @ W.T
        r = sig(pre[t, :, :H] + rec[:, :H])
        z = sig(pre[t, :, H:2 * H] + rec[:, H:2 * H])
        hn = rec[:, 2 * H:] + bn
        nn = np.tanh(pre[t, :, 2 * H:] + r * hn)
        rows[t + 1] = np.concatenate([(1 - z) * nn + z * h, r, z, nn, hn], axis=1)
    return rows


def gru_backward(dhe, inj0, rows, W, dstate):
    """delta [n, B, 4H] = [dr dz dhn | dn_x] and dstate [B, H] after the first step."""
    n = rows.shape[0] - 1
    H = W.shape[1]
    dstate = dstate.copy()
    delta = np.zeros((n, rows.shape[1], 4 * H))
    for t in range(n - 1, -1, -1):
        if t >= inj0:
            dstate += dhe[t - inj0]
        dh = dstate
        r, z, nn, hn = (rows[t + 1, :, k * H:(k + 1) * H] for k in range(1, 5))
        dn = dh * (1 - z)
        dzg = dh * (rows[t, :, :H] - nn)
        dnx = dn * (1 - nn ** 2)
        delta[t] = np.concatenate([dnx * hn * r * (1 - r), dzg * z * (1 - z), dnx * r, dnx], axis=1)
        dstate = dh * z + delta[t, :, :3 * H] @ W
    return delta, dstate


CELLS = {
    # cell: (module, G, S, NumPy forward(pre, W, bn, state0), NumPy backward, input-side deltas)
    "lstm": (lstm, 4, 2, lambda pre, W, bn, s0: lstm_forward(pre, W, *np.split(s0, 2, axis=1)),
             lstm_backward, lambda d: d),
    "gru": (gru, 3, 1, lambda pre, W, bn, s0: gru_forward(pre, W, bn, s0),
            gru_backward, lambda d: np.concatenate([d[..., :-2 * d.shape[-1] // 4],
                                                    d[..., -d.shape[-1] // 4:]], axis=-1)),
}


def _problem(cell, dtype, n=4, B=2, H=5, seed=0):
    mod, G, S, fwd, bwd, xside = CELLS[cell]
    rng = np.random.default_rng(seed)
    pre = rng.standard_normal((n, B, G * H))
    W = rng.standard_normal((G * H, H)) / np.sqrt(H)
    bn = rng.standard_normal(H)
    s0 = rng.standard_normal((B, S * H))
    inj0 = 1
    dhe = rng.standard_normal((n - inj0, B, H))
    ds_in = rng.standard_normal((B, S * H))            # ∂L/∂(state_n) from later steps
    cast = (lambda a: a.astype(dtype))
    return SimpleNamespace(**{k: cast(v) if isinstance(v, np.ndarray) else v for k, v in dict(
        pre=pre, W=W, bn=bn, s0=s0, inj0=inj0, dhe=dhe, ds_in=ds_in, n=n, B=B, H=H).items()})


@pytest.mark.parametrize("cell", list(CELLS))
def test_numpy_contract_matches_finite_differences(cell):
    """The NumPy backward above is ∂L/∂(pre-activations, initial state) of the NumPy forward for
    L = Σ_{t>=inj0} <dhe_t, h_{t+1}> + <ds_in, state_n>: checked along a random direction."""
    mod, G, S, fwd, bwd, xside = CELLS[cell]
    p = _problem(cell, np.float64)
    H = p.H

    def loss(pre, s0):
        rows = fwd(pre, p.W, p.bn, s0)
        return (np.sum(p.dhe * rows[p.inj0 + 1:, :, :H]) + np.sum(p.ds_in * rows[-1, :, :S * H]))

    rows = fwd(p.pre, p.W, p.bn, p.s0)
    delta, ds0 = bwd(p.dhe, p.inj0, rows, p.W, p.ds_in)
    rng = np.random.default_rng(1)
    dp, dq = rng.standard_normal(p.pre.shape), rng.standard_normal(p.s0.shape)
    eps = 1e-6
    fd = (loss(p.pre + eps * dp, p.s0 + eps * dq) - loss(p.pre - eps * dp, p.s0 - eps * dq)) / (2 * eps)
    an = np.sum(xside(delta) * dp) + np.sum(ds0 * dq)
    assert abs(fd - an) <= FINITE_DIFF * max(1.0, abs(an)), (fd, an)
    if cell == "gru":                                   # dhn = dn_x ⊙ r, the recurrent-side n delta
        np.testing.assert_allclose(delta[..., 2 * H:3 * H], delta[..., 3 * H:] * rows[1:, :, H:2 * H])


@pytest.mark.parametrize("path", ["per-step", "persistent"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_kernels_match_numpy(cell, dtype, path, monkeypatch):
    monkeypatch.setattr(config, "RECURRENT", path)
    mod, G, S, fwd, bwd, xside = CELLS[cell]
    p = _problem(cell, dtype)
    n, B, H = p.n, p.B, p.H
    tol = CUDA64 if dtype == np.float64 else CUDA32
    dev = Device(dtype)
    assert dev.recurrent_path(B, H, G * H * H) == path
    w = SimpleNamespace(W=cuda.to_device(p.W), bn=cuda.to_device(p.bn))

    rows = np.full((n + 1, B, spec(cell).K * H), np.nan, dtype=dtype)   # only row 0's state is read
    rows[0, :, :S * H] = p.s0
    drows = cuda.to_device(rows)
    mod.forward(dev, cuda.to_device(p.pre), drows, w)
    want = fwd(p.pre.astype(np.float64), p.W.astype(np.float64), p.bn.astype(np.float64),
               p.s0.astype(np.float64))
    got = drows.copy_to_host()
    np.testing.assert_allclose(got[1:], want[1:], err_msg="rows", **tol)

    ddstate = cuda.to_device(p.ds_in)
    ddelta = cuda.to_device(np.full((n, B, spec(cell).D * H), np.nan, dtype=dtype))
    out = mod.backward(dev, cuda.to_device(p.dhe), p.inj0, drows, ddstate, ddelta, w)
    delta, ds0 = bwd(p.dhe.astype(np.float64), p.inj0, want, p.W.astype(np.float64),
                     p.ds_in.astype(np.float64))
    np.testing.assert_allclose(out.copy_to_host(), delta, err_msg="delta", **tol)
    np.testing.assert_allclose(ddstate.copy_to_host(), ds0, err_msg="dstate", **tol)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_backward_without_injection(cell, monkeypatch):
    """dhe=None (a window's steps before the block, or checkpoint segments): only dstate flows."""
    monkeypatch.setattr(config, "RECURRENT", "per-step")
    mod, G, S, fwd, bwd, xside = CELLS[cell]
    p = _problem(cell, np.float64, seed=2)
    n, B, H = p.n, p.B, p.H
    rows = fwd(p.pre, p.W, p.bn, p.s0)
    dev = Device(np.float64)
    w = SimpleNamespace(W=cuda.to_device(p.W), bn=cuda.to_device(p.bn))
    ddstate = cuda.to_device(p.ds_in)
    out = mod.backward(dev, None, 0, cuda.to_device(rows), ddstate, dev.empty((n, B, spec(cell).D * H)), w)
    delta, ds0 = bwd(p.dhe, n, rows, p.W, p.ds_in)
    np.testing.assert_allclose(out.copy_to_host(), delta, **CUDA64)
    np.testing.assert_allclose(ddstate.copy_to_host(), ds0, **CUDA64)


# --------------------------------------------------------------------------- the layer API
def _layer_oracle(cell, x, state0, U, W, b, bn, dhs, dlast):
    """hs, last state and every gradient from the cells' NumPy step functions (the oracle)."""
    from fastbptt.cells import CELLS
    ref = CELLS[cell].ref
    S = CELLS[cell].S
    H = W.shape[1]
    extra = {"bn": bn} if bn is not None else {}
    states, caches = [tuple(np.split(state0, S, axis=1))], []
    for t in range(x.shape[0]):
        st, ca = ref.forward(x[t] @ U.T + b, states[-1], W, extra, "tanh")
        states.append(st)
        caches.append(ca)
    ds = tuple(np.split(dlast, S, axis=1))
    dx, dU, dW = np.zeros_like(x), np.zeros_like(U), np.zeros_like(W)
    dpx_all, dph_all = [], []
    for t in range(x.shape[0] - 1, -1, -1):
        ds = (ds[0] + dhs[t],) + ds[1:]
        dpx, dph, ds = ref.backward(ds, caches[t], states[t], W, extra, "tanh")
        dx[t] = dpx @ U
        dU += dpx.T @ x[t]
        dW += dph.T @ states[t][0]
        dpx_all.append(dpx)
        dph_all.append(dph)
    bg = ref.bias_grads(np.concatenate(dpx_all), np.concatenate(dph_all))
    hs = np.stack([s[0] for s in states[1:]])
    return hs, np.concatenate(states[-1], axis=1), (dx, np.concatenate(ds, axis=1), dU, dW,
                                                    bg["b"], bg.get("bn"))


LAYER_CASES = [("rnn", "per-step", False, False), ("lstm", "per-step", True, False),
               ("lstm", "persistent", False, True), ("gru", "per-step", False, True),
               ("gru", "persistent", True, False)]


@pytest.mark.parametrize("cell,path,batch_first,device", LAYER_CASES)
def test_layer_forward_backward_match_oracle(cell, path, batch_first, device, monkeypatch):
    """layer_forward/layer_backward (the layer API's CUDA half) against the cells' NumPy steps,
    with initial states, gradients on the final state, batch-first and device arrays."""
    from fastbptt.cells import CELLS
    from fastbptt.cuda import layer_backward, layer_forward
    monkeypatch.setattr(config, "RECURRENT", path)
    cl = CELLS[cell]
    rng = np.random.default_rng(4)
    T, B, n_in, H = 4, 2, 3, 5
    x = rng.standard_normal((T, B, n_in))
    U = rng.standard_normal((cl.G * H, n_in)) / np.sqrt(n_in)
    W = rng.standard_normal((cl.G * H, H)) / np.sqrt(H)
    b = rng.standard_normal(cl.G * H)
    bn = rng.standard_normal(H) if cell == "gru" else None
    state0 = rng.standard_normal((B, cl.S * H))
    dhs = rng.standard_normal((T, B, H))
    dlast = rng.standard_normal((B, cl.S * H))
    hs_ref, last_ref, grads_ref = _layer_oracle(cell, x, state0, U, W, b, bn, dhs, dlast)

    def arg(a):
        if a is None:
            return None
        a = np.ascontiguousarray(a.transpose(1, 0, 2)) if (batch_first and a.ndim == 3) else a
        return cuda.to_device(a) if device else a

    h0, c0 = state0[:, :H], (state0[:, H:] if cl.S == 2 else None)
    hs, f = layer_forward(cell, arg(x), arg(np.ascontiguousarray(h0)),
                          arg(None if c0 is None else np.ascontiguousarray(c0)),
                          arg(U), arg(W), arg(b), arg(bn), batch_first=batch_first)
    host = (lambda a: a.copy_to_host()) if device else np.asarray
    got_hs = host(hs)
    np.testing.assert_allclose(got_hs.transpose(1, 0, 2) if batch_first else got_hs, hs_ref,
                               err_msg="hs", **CUDA64)
    np.testing.assert_allclose(host(f["h_last"]), last_ref[:, :H], **CUDA64)
    if cl.S == 2:
        np.testing.assert_allclose(host(f["c_last"]), last_ref[:, H:], **CUDA64)
    cache = SimpleNamespace(cell=cl, batch_first=batch_first, **f)
    out = layer_backward(arg(dhs), cache, arg(np.ascontiguousarray(dlast[:, :H])),
                         arg(np.ascontiguousarray(dlast[:, H:])) if cl.S == 2 else None)
    for name, g, r in zip(("dx", "dstate0", "dU", "dW", "db", "dbn"), out, grads_ref):
        if r is None:
            assert g is None, name
            continue
        g = host(g)
        if name == "dx" and batch_first:
            g = g.transpose(1, 0, 2)
        np.testing.assert_allclose(g, r, err_msg=name, **CUDA64)


def test_layer_rejects_bad_state_arguments():
    from fastbptt.cuda import layer_forward
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4))
    U, W, b, bn = (rng.standard_normal(s) for s in ((15, 4), (15, 5), (15,), (5,)))
    with pytest.raises(TypeError, match="c0 applies to the LSTM only"):
        layer_forward("gru", x, None, np.zeros((2, 5)), U, W, b, bn)
    with pytest.raises(ValueError, match=r"h0 must be \[B, H\] = \[2, 5\]"):
        layer_forward("gru", x, np.zeros((2, 4)), None, U, W, b, bn)
    with pytest.raises(ValueError, match="cell='lstm'"):
        layer_forward("lstm", x, None, None, U, W, b)
