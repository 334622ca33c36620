"""A faithful PyTorch reference of M's training step, for `make bench` only.

Same network (LSTM with `hidden` units on [z, a], a linear head of 3·K·Z + reward + done),
same loss (per-dimension mixture NLL with bounded log sigma, BCE reward and done heads),
same optimizer (Adam 1e-3, global-norm clipping at 1.0), same batches (B windows of L steps
gathered from a series in memory, z sampled from N(mu, sigma) every step). PyTorch's own
defaults otherwise: all cores, float32, its fused LSTM kernel.
"""

from __future__ import annotations

import math
import time

import numpy as np


def torch_mdnrnn_runner(latent_dim: int = 32, action_dim: int = 3, hidden: int = 256,
                        mixtures: int = 5, batch: int = 100, seq_len: int = 100,
                        frames: int = 50_000, seed: int = 0):
    """Build the model and data once; returns run(n) -> sequences trained in n steps."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    K, Z = mixtures, latent_dim

    class MDNRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(Z + action_dim, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 3 * K * Z + 2)

        def forward(self, x):
            h, _ = self.lstm(x)
            out = self.head(h)
            b, t = out.shape[:2]
            logit_pi, mu, log_sigma = (out[..., i * K * Z:(i + 1) * K * Z].reshape(b, t, K, Z)
                                       for i in range(3))
            return logit_pi, mu, log_sigma.clamp(-5.0, 2.0), out[..., -2], out[..., -1]

    model = MDNRNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    mu_all = torch.from_numpy(rng.normal(size=(frames, Z)).astype(np.float32))
    logvar_all = torch.from_numpy(rng.normal(-2, 0.5, size=(frames, Z)).astype(np.float32))
    action_all = torch.from_numpy(rng.uniform(-1, 1, size=(frames, action_dim)).astype(np.float32))
    reward_all = torch.from_numpy((rng.random(frames) < 0.1).astype(np.float32))
    done_all = torch.from_numpy((rng.random(frames) < 0.002).astype(np.float32))
    log_sqrt_2pi = 0.5 * math.log(2 * math.pi)

    def train_step(i):
        starts = torch.from_numpy(np.random.default_rng([seed, i]).integers(0, frames - seq_len - 1, batch))
        idx = starts[:, None] + torch.arange(seq_len + 1)[None]
        mu, logvar = mu_all[idx], logvar_all[idx]
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x = torch.cat([z[:, :-1], action_all[idx[:, :-1]]], dim=-1)
        logit_pi, m, log_sigma, reward_logit, done_logit = model(x)
        target = z[:, 1:, None, :]
        log_pi = torch.log_softmax(logit_pi, dim=-2)
        log_normal = -0.5 * ((target - m) * torch.exp(-log_sigma)) ** 2 - log_sigma - log_sqrt_2pi
        z_nll = -torch.logsumexp(log_pi + log_normal, dim=-2).mean()
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = (z_nll + bce(reward_logit, reward_all[idx[:, :-1]])
                + bce(done_logit, done_all[idx[:, :-1]]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    counter = {"i": 0}

    def run(n: int) -> float:
        for _ in range(n):
            train_step(counter["i"])
            counter["i"] += 1
        return n * batch

    return run


if __name__ == "__main__":
    run = torch_mdnrnn_runner()
    run(3)
    start = time.perf_counter()
    print(f"{run(20) / (time.perf_counter() - start):.1f} sequences/s")
