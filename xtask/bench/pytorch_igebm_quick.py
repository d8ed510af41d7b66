"""The unconditional half of `cargo xtask reproduce igebm --quick`, in PyTorch (eager, CPU).

A reference for sample quality at the same compute budget: the same network as the quick recipe's
(`IgebmConfig::small(1, 28, 16)` without spectral norm, halving the resolution after blocks 1 and
3), the same data (Fashion-MNIST, uniformly dequantised), the same recipe (batch 64, ITERATIONS
iterations, 10 Langevin steps of size 10, noise 0.005, gradient clip 0.01, replay buffer of 10,000
with 5% restarts, loss mean E+ - mean E- + 0.1 (mean E+^2 + mean E-^2), Adam lr 1e-3 betas
(0, 0.999); pictures from noise by 100 steps). PyTorch's own initialisation and plain Adam (no
second-moment bound).

Usage: python pytorch_igebm_quick.py [FASHION_MNIST_DIR] [OUT_DIR]
Writes OUT_DIR/pytorch_buffer.npy and OUT_DIR/pytorch_noise.npy (100 x 1 x 28 x 28 in [0, 1]).
"""
import gzip
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "."
torch.set_num_threads(2)
torch.manual_seed(0)
ITERATIONS = 1600


def idx(path):
    b = gzip.open(path).read()
    n = int.from_bytes(b[4:8], "big")
    return np.frombuffer(b[16:], np.uint8).reshape(n, 1, 28, 28)


X = torch.from_numpy(idx(f"{data_dir}/train-images-idx3-ubyte.gz").copy()).float()
W = 16


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, h):
        return h + self.c2(F.silu(self.c1(F.silu(h))))


class Energy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, W, 3, padding=1)
        self.blocks = nn.ModuleList([Block(W) for _ in range(4)])
        self.head = nn.Linear(W, 1)

    def forward(self, x):
        h = self.stem(x)
        for i, b in enumerate(self.blocks):
            h = b(h)
            if i in (0, 2):
                h = F.avg_pool2d(h, 2)
        return self.head(F.silu(h).sum((2, 3))).squeeze(1)


model = Energy()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.999))
buffer = torch.rand(0, 1, 28, 28)
B = 64


def langevin(x, steps):
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).sum(), x)
        x = (x - 10 * g.clamp(-0.01, 0.01) + 0.005 * torch.randn_like(x)).clamp(0, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    return x.detach()


start = time.time()
for it in range(ITERATIONS):
    pos = (X[torch.randint(0, len(X), (B,))] + torch.rand(B, 1, 28, 28)) / 256
    if len(buffer) == 0:
        x0 = torch.rand(B, 1, 28, 28)
    else:
        x0 = buffer[torch.randint(0, len(buffer), (B,))]
        fresh = torch.rand(B) < 0.05
        x0[fresh] = torch.rand(int(fresh.sum()), 1, 28, 28)
    neg = langevin(x0, 10)
    buffer = torch.cat([neg, buffer])[:10000]
    e = model(torch.cat([pos, neg]))
    ep, en = e[:B], e[B:]
    loss = ep.mean() - en.mean() + 0.1 * ((ep**2).mean() + (en**2).mean())
    opt.zero_grad()
    loss.backward()
    opt.step()
    if it % 200 == 0:
        print(f"step {it}: loss {loss.item():.4f} E+ {ep.mean().item():.4f} E- {en.mean().item():.4f} {time.time() - start:.0f} s", flush=True)
np.save(f"{out_dir}/pytorch_buffer.npy", buffer[:100].numpy())
np.save(f"{out_dir}/pytorch_noise.npy", langevin(torch.rand(100, 1, 28, 28), 100).numpy())
print(f"seconds: {time.time() - start:.0f}")
