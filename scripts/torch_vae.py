"""PyTorch reference of the World Models VAE ("V"), for `make bench` comparisons only.

The product never imports torch; only this script does (install with the `bench` extra).

Same network and loss as the JAX/Flax VAE, in PyTorch's NCHW layout:

    encoder  (B, 3, 64, 64) -> Conv 32, 64, 128, 256 (kernel 4, stride 2, no padding, ReLU)
             -> (B, 256, 2, 2) -> flatten 1024 -> Linear mu (32), Linear logvar (32)
    sample   z = mu + exp(logvar / 2) * eps
    decoder  Linear 1024 -> (B, 1024, 1, 1) -> ConvTranspose 128 (k5), 64 (k5), 32 (k6), 3 (k6),
             stride 2, no padding (spatial 1 -> 5 -> 13 -> 30 -> 64), ReLU between, sigmoid out
    loss     per image: sum of squared error over pixels + max(KL, kl_tolerance * 32),
             KL = -1/2 sum(1 + logvar - mu^2 - exp(logvar)); mean over the batch
    optim    Adam, lr 1e-4, float32

`torch_vae_train_images_per_s` measures honest training throughput: float32, torch's default
thread count (all cores) unless `threads` is given, default `torch.backends` settings, the same
batch every step (data loading is not part of the figure), after warm-up steps.

    python -m scripts.torch_vae                 # prints images/s
    python -m scripts.torch_vae --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

Z_SIZE = 32
KL_TOLERANCE = 0.5
LEARNING_RATE = 1e-4


class TorchVAE(nn.Module):
    """The World Models ConvVAE in NCHW."""

    def __init__(self, z_size: int = Z_SIZE):
        super().__init__()
        self.z_size = z_size
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2), nn.ReLU(),
            nn.Conv2d(128, 256, 4, stride=2), nn.ReLU(),
            nn.Flatten(),
        )
        self.mu = nn.Linear(1024, z_size)
        self.logvar = nn.Linear(1024, z_size)
        self.dense = nn.Linear(z_size, 1024)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 6, stride=2), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(logvar / 2) * torch.randn_like(mu)
        recon = self.decoder(self.dense(z).view(-1, 1024, 1, 1))
        return recon, mu, logvar


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             kl_tolerance: float = KL_TOLERANCE) -> torch.Tensor:
    """Mean over the batch of (summed squared error + KL clipped below at kl_tolerance * z_size)."""
    r_loss = ((x - recon) ** 2).sum(dim=(1, 2, 3))
    kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(dim=1)
    kl = torch.clamp(kl, min=kl_tolerance * mu.shape[1])
    return (r_loss + kl).mean()


def make_train_step(model: TorchVAE, lr: float = LEARNING_RATE):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        recon, mu, logvar = model(x)
        loss = vae_loss(x, recon, mu, logvar)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def torch_vae_train_images_per_s(batch: int = 100, steps: int = 20, threads: int | None = None,
                                 warmup: int = 3, seed: int = 0) -> float:
    """Training images/s of the PyTorch VAE (float32, NCHW) over `steps` steps after `warmup`.

    `threads=None` keeps torch's default intra-op thread count (all cores)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = TorchVAE()
        step = make_train_step(model)
        x = torch.rand(batch, 3, 64, 64, dtype=torch.float32)
        for _ in range(warmup):
            step(x)
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(x)
        float(loss)  # eager mode: everything has run, this is just a final sync point
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return batch * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    rate = torch_vae_train_images_per_s(args.batch, args.steps, args.threads)
    print(f"torch_vae_train_images_per_s {rate:.1f} images/s "
          f"(batch {args.batch}, threads {args.threads or torch.get_num_threads()})")


if __name__ == "__main__":
    main()
