"""Karpathy's batched LSTM gist (``LSTM.init`` / ``forward`` / ``backward``), in Python 3.

``X (n, b, input_size)``; ``WLSTM (1 + input_size + hidden_size, 4 * hidden_size)`` acting on
``[1, x_t, h_{t-1}]`` (bias in row 0), gate columns i, f, o, g. Every buffer starts from
``np.zeros`` (float64). ``checkSequentialMatchesBatch`` and ``checkBatchGradient`` are the
gist's own checks, returning what they compare instead of printing it.
"""
import numpy as np


class LSTM:

    @staticmethod
    def init(input_size, hidden_size, fancy_forget_bias_init=3):
        WLSTM = np.random.randn(input_size + hidden_size + 1, 4 * hidden_size) / np.sqrt(input_size + hidden_size)
        WLSTM[0, :] = 0
        if fancy_forget_bias_init != 0:
            WLSTM[0, hidden_size:2 * hidden_size] = fancy_forget_bias_init
        return WLSTM

    @staticmethod
    def forward(X, WLSTM, c0=None, h0=None):
        n, b, input_size = X.shape
        d = WLSTM.shape[1] // 4
        if c0 is None:
            c0 = np.zeros((b, d))
        if h0 is None:
            h0 = np.zeros((b, d))
        xphpb = WLSTM.shape[0]
        Hin = np.zeros((n, b, xphpb))
        Hout = np.zeros((n, b, d))
        IFOG = np.zeros((n, b, d * 4))
        IFOGf = np.zeros((n, b, d * 4))
        C = np.zeros((n, b, d))
        Ct = np.zeros((n, b, d))
        for t in range(n):
            prevh = Hout[t - 1] if t > 0 else h0
            Hin[t, :, 0] = 1
            Hin[t, :, 1:input_size + 1] = X[t]
            Hin[t, :, input_size + 1:] = prevh
            IFOG[t] = Hin[t].dot(WLSTM)
            IFOGf[t, :, :3 * d] = 1.0 / (1.0 + np.exp(-IFOG[t, :, :3 * d]))
            IFOGf[t, :, 3 * d:] = np.tanh(IFOG[t, :, 3 * d:])
            prevc = C[t - 1] if t > 0 else c0
            C[t] = IFOGf[t, :, :d] * IFOGf[t, :, 3 * d:] + IFOGf[t, :, d:2 * d] * prevc
            Ct[t] = np.tanh(C[t])
            Hout[t] = IFOGf[t, :, 2 * d:3 * d] * Ct[t]
        cache = {"WLSTM": WLSTM, "Hout": Hout, "IFOGf": IFOGf, "IFOG": IFOG, "C": C, "Ct": Ct,
                 "Hin": Hin, "c0": c0, "h0": h0}
        return Hout, C[t], Hout[t], cache

    @staticmethod
    def backward(dHout_in, cache, dcn=None, dhn=None):
        WLSTM, Hout, IFOGf, IFOG = cache["WLSTM"], cache["Hout"], cache["IFOGf"], cache["IFOG"]
        C, Ct, Hin, c0 = cache["C"], cache["Ct"], cache["Hin"], cache["c0"]
        n, b, d = Hout.shape
        input_size = WLSTM.shape[0] - d - 1
        dIFOG = np.zeros(IFOG.shape)
        dIFOGf = np.zeros(IFOGf.shape)
        dWLSTM = np.zeros(WLSTM.shape)
        dHin = np.zeros(Hin.shape)
        dC = np.zeros(C.shape)
        dX = np.zeros((n, b, input_size))
        dh0 = np.zeros((b, d))
        dc0 = np.zeros((b, d))
        dHout = dHout_in.copy()
        if dcn is not None:
            dC[n - 1] += dcn.copy()
        if dhn is not None:
            dHout[n - 1] += dhn.copy()
        for t in reversed(range(n)):
            tanhCt = Ct[t]
            dIFOGf[t, :, 2 * d:3 * d] = tanhCt * dHout[t]
            dC[t] += (1 - tanhCt ** 2) * (IFOGf[t, :, 2 * d:3 * d] * dHout[t])
            if t > 0:
                dIFOGf[t, :, d:2 * d] = C[t - 1] * dC[t]
                dC[t - 1] += IFOGf[t, :, d:2 * d] * dC[t]
            else:
                dIFOGf[t, :, d:2 * d] = c0 * dC[t]
                dc0 = IFOGf[t, :, d:2 * d] * dC[t]
            dIFOGf[t, :, :d] = IFOGf[t, :, 3 * d:] * dC[t]
            dIFOGf[t, :, 3 * d:] = IFOGf[t, :, :d] * dC[t]
            dIFOG[t, :, 3 * d:] = (1 - IFOGf[t, :, 3 * d:] ** 2) * dIFOGf[t, :, 3 * d:]
            y = IFOGf[t, :, :3 * d]
            dIFOG[t, :, :3 * d] = (y * (1.0 - y)) * dIFOGf[t, :, :3 * d]
            dWLSTM += np.dot(Hin[t].transpose(), dIFOG[t])
            dHin[t] = dIFOG[t].dot(WLSTM.transpose())
            dX[t] = dHin[t, :, 1:input_size + 1]
            if t > 0:
                dHout[t - 1, :] += dHin[t, :, input_size + 1:]
            else:
                dh0 += dHin[t, :, input_size + 1:]
        return dX, dWLSTM, dc0, dh0


def checkSequentialMatchesBatch(lstm=LSTM, n=5, b=3, d=4, input_size=10):
    """Forward/backward one step at a time (passing c, h and dc, dh along) against the batch."""
    WLSTM = lstm.init(input_size, d)
    X = np.random.randn(n, b, input_size)
    h0 = np.random.randn(b, d)
    c0 = np.random.randn(b, d)
    cprev, hprev = c0, h0
    caches = [{} for t in range(n)]
    Hcat = np.zeros((n, b, d))
    for t in range(n):
        xt = X[t:t + 1]
        _, cprev, hprev, cache = lstm.forward(xt, WLSTM, cprev, hprev)
        caches[t] = cache
        Hcat[t] = hprev
    H, _, _, batch_cache = lstm.forward(X, WLSTM, c0, h0)
    wrand = np.random.randn(*Hcat.shape)
    dH = wrand
    BdX, BdWLSTM, Bdc0, Bdh0 = lstm.backward(dH, batch_cache)
    dX = np.zeros_like(X)
    dWLSTM = np.zeros_like(WLSTM)
    dcnext = dhnext = None
    for t in reversed(range(n)):
        dht = dH[t].reshape(1, b, d)
        dx, dWLSTMt, dcprev, dhprev = lstm.backward(dht, caches[t], dcnext, dhnext)
        dhnext, dcnext = dhprev, dcprev
        dWLSTM += dWLSTMt
        dX[t] = dx[0]
        if t == 0:
            dc0, dh0 = dcprev, dhprev
    return (H, Hcat), [(BdX, dX), (BdWLSTM, dWLSTM), (Bdc0, dc0), (Bdh0, dh0)]


def checkBatchGradient(lstm=LSTM, n=5, b=3, d=4, input_size=10, delta=1e-5):
    """Worst relative error of the analytic gradients against central differences."""
    WLSTM = lstm.init(input_size, d)
    X = np.random.randn(n, b, input_size)
    h0 = np.random.randn(b, d)
    c0 = np.random.randn(b, d)
    H, Ct, Ht, cache = lstm.forward(X, WLSTM, c0, h0)
    wrand = np.random.randn(*H.shape)
    dX, dWLSTM, dc0, dh0 = lstm.backward(wrand, cache)

    def fwd():
        h, _, _, _ = lstm.forward(X, WLSTM, c0, h0)
        return np.sum(h * wrand)

    worst = {}
    for name, mat, dmat in (("X", X, dX), ("WLSTM", WLSTM, dWLSTM), ("c0", c0, dc0), ("h0", h0, dh0)):
        errs = []
        for i in range(mat.size):
            old_val = mat.flat[i]
            mat.flat[i] = old_val + delta
            loss0 = fwd()
            mat.flat[i] = old_val - delta
            loss1 = fwd()
            mat.flat[i] = old_val
            grad_analytic = dmat.flat[i]
            grad_numerical = (loss0 - loss1) / (2 * delta)
            if grad_numerical == 0 and grad_analytic == 0:
                errs.append(0.0)
            else:
                errs.append(abs(grad_analytic - grad_numerical) / abs(grad_numerical + grad_analytic))
        worst[name] = max(errs)
    return worst
