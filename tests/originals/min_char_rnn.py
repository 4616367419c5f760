"""min-char-rnn (Karpathy's gist): ``lossFun`` of a vanilla tanh RNN over one-hot characters.

Column vectors throughout: ``Wxh (H, V)``, ``Whh (H, H)``, ``Why (V, H)``, ``bh (H, 1)``,
``by (V, 1)``, ``hprev (H, 1)``. The loss is the summed negative log-likelihood; gradients are
clipped element-wise to [-5, 5] before returning, and the last hidden state is returned.
"""
import numpy as np


def make_lossfun(Wxh, Whh, Why, bh, by):
    vocab_size = Wxh.shape[1]

    def lossFun(inputs, targets, hprev):
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0.0
        # forward, one step at a time
        for t in range(len(inputs)):
            xs[t] = np.zeros((vocab_size, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
            ys[t] = Why @ hs[t] + by
            ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))   # unshifted softmax, as the original
            loss += -np.log(ps[t][targets[t], 0])
        # backward
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[-1])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += dy @ hs[t].T
            dby += dy
            dh = Why.T @ dy + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += dhraw @ xs[t].T
            dWhh += dhraw @ hs[t - 1].T
            dhnext = Whh.T @ dhraw
        for dparam in (dWxh, dWhh, dWhy, dbh, dby):
            np.clip(dparam, -5, 5, out=dparam)
        return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]

    return lossFun
