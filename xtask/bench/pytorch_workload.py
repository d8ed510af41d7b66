"""The canonical Langevin workload (docs/ARCHITECTURE.md, "Performance") in PyTorch, eager mode.

The same network as `cargo xtask bench langevin`: conv3x3(CH -> C), four residual blocks
h + conv(swish(conv(swish(h)))) with 2x2 average pooling after blocks 1 and 3, and
linear(C -> 1) of the spatial sum of swish(h). One step: g = d(sum e)/dx (input only),
x = clamp(x - 10 g + 0.005 N(0, I), 0, 1).

Usage: python pytorch_workload.py langevin --batch 128 --channels 3 --size 32 --width 64 --steps 20 --threads 2
       python pytorch_workload.py train ...   (one contrastive-divergence iteration)
       python pytorch_workload.py latent ...  (the latent-prior MLP step)
Prints `image-steps/s: N` (or `iterations/s`, `steps/s`) and `peak-rss-mib: M` last.
"""
import argparse
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, h):
        return h + self.conv2(F.silu(self.conv1(F.silu(h))))


class Energy(nn.Module):
    def __init__(self, ch, c):
        super().__init__()
        self.stem = nn.Conv2d(ch, c, 3, padding=1)
        self.blocks = nn.ModuleList([Block(c) for _ in range(4)])
        self.head = nn.Linear(c, 1)

    def forward(self, x):
        h = self.stem(x)
        for i, b in enumerate(self.blocks):
            h = b(h)
            if i in (1, 3):
                h = F.avg_pool2d(h, 2)
        return self.head(F.silu(h).sum((2, 3))).squeeze(1)


def langevin(model, x, steps):
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).sum(), x)
        x = (x - 10.0 * g + 0.005 * torch.randn_like(x)).clamp(0, 1)
    return x.detach()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["langevin", "train", "latent"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.what == "latent":
        mlp = nn.Sequential(nn.Linear(100, 200), nn.LeakyReLU(0.2), nn.Linear(200, 200), nn.LeakyReLU(0.2), nn.Linear(200, 1))
        for q in mlp.parameters():
            q.requires_grad_(False)
        z = torch.randn(100, 100)
        def step(z):
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(mlp(z).sum(), z)
            return z - 0.08 * (g + z) + 0.4 * torch.randn_like(z)
        for _ in range(2):
            z = step(z)
        t = time.perf_counter()
        for _ in range(a.steps):
            z = step(z)
        rate = a.steps / (time.perf_counter() - t)
        print(f"steps/s: {rate:.1f}")
    else:
        model = Energy(a.channels, a.width)
        x = torch.rand(a.batch, a.channels, a.size, a.size)
        if a.what == "langevin":
            for q in model.parameters():
                q.requires_grad_(False)
            x = langevin(model, x, 2)
            t = time.perf_counter()
            x = langevin(model, x, a.steps)
            rate = a.batch * a.steps / (time.perf_counter() - t)
            print(f"image-steps/s: {rate:.1f}")
        else:
            opt = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.0, 0.999))
            data = torch.rand(a.batch, a.channels, a.size, a.size)
            def iteration(x):
                for q in model.parameters():
                    q.requires_grad_(False)
                neg = langevin(model, x, a.steps)
                for q in model.parameters():
                    q.requires_grad_(True)
                e = model(torch.cat([data, neg]))
                ep, en = e[: a.batch], e[a.batch :]
                loss = ep.mean() - en.mean() + (ep ** 2 + en ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                return neg
            x = iteration(x)
            t = time.perf_counter()
            iters = 3
            for _ in range(iters):
                x = iteration(x)
            print(f"iterations/s: {iters / (time.perf_counter() - t):.3f}")
    print(f"peak-rss-mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
