"""Times the bench workloads in PyTorch/scipy on this machine, for side-by-side ratios.

Run by `npm run bench -- --vs-torch` with Debian's /usr/bin/python3 (python3-torch, python3-scipy).
Prints one JSON object on stdout. Workloads mirror bench/training.ts and bench/sinkhorn.ts.
"""
import json
import statistics
import sys
import time

import torch

torch.set_num_threads(2)
quick = "--quick" in sys.argv


def median_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts)


out = {}
g = torch.Generator().manual_seed(0)

n = 2048
a = torch.randn(n, n, generator=g)
b = torch.randn(n, n, generator=g)
ms = median_ms(lambda: a @ b, 3 if quick else 9)
out["sgemm2048Gflops"] = 2 * n**3 / (ms / 1000) / 1e9

# MLP 784-512-512-512-10, batch 512, SGD momentum.
mlp = torch.nn.Sequential(
    torch.nn.Linear(784, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 10))
opt = torch.optim.SGD(mlp.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(512, 784, generator=g)
y = torch.arange(512) % 10


def mlp_step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(mlp(x), y).backward()
    opt.step()


out["mlpStepsPerSec"] = 1000 / median_ms(mlp_step, 5 if quick else 21, 3)

cnn = torch.nn.Sequential(
    torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(128, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(), torch.nn.Linear(128 * 8 * 8, 10))
copt = torch.optim.SGD(cnn.parameters(), lr=0.01, momentum=0.9)
cx = torch.randn(128, 3, 32, 32, generator=g)
cy = torch.arange(128) % 10


def cnn_step():
    copt.zero_grad()
    torch.nn.functional.cross_entropy(cnn(cx), cy).backward()
    copt.step()


out["cnnStepsPerSec"] = 1000 / median_ms(cnn_step, 2 if quick else 5, 1)

# 20 log-domain Sinkhorn iterations (columns then rows) on 1024², as the reference's forward.
lp0 = torch.randn(1024, 1024, generator=g)


def sinkhorn():
    lp = lp0.clone()
    for _ in range(20):
        lp = lp - torch.logsumexp(lp, dim=-2, keepdim=True)
        lp = lp - torch.logsumexp(lp, dim=-1, keepdim=True)
    return lp


out["sinkhorn1024x20Ms"] = median_ms(sinkhorn, 3 if quick else 9)

try:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    lap = {}
    for size in (256, 512, 1024, 2048):
        c = rng.random((size, size))
        lap[str(size)] = median_ms(lambda: linear_sum_assignment(c, maximize=True), 3 if quick or size >= 2048 else 7, 1)
    out["lapMs"] = lap
except ImportError:
    pass

print(json.dumps(out))
