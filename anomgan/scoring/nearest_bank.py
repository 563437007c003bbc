"""The patch term's search: for each image, the largest distance from one of its patch features
to the nearest entry of a memory bank,

    p(x) = max over positions u of  min over b in B of ||P(x)_u - b||_2        (PatchCore's score)

Algorithm (exact, a pruned scan): squared distances are ||q||^2 + ||b||^2 - 2 q.b, one GEMM per
block of ``block`` bank entries. (1) Every position is scanned against the first block, giving
an upper bound of its nearest distance. (2) The ``candidates`` positions of each image with the
largest bounds are scanned against the whole bank; the largest of their exact nearest distances,
lo, is a lower bound of p(x). (3) A position whose bound is already <= lo cannot raise the
maximum and is dropped; the rest are scanned block by block, dropped as soon as their bound falls
to lo. p(x) is the largest of lo and the survivors' exact distances. On normal-looking images
almost every position finds a near bank entry in the first block, so most of the bank is read
for a handful of positions only.

Memory traffic: the bank (B x D float32) is read once for all positions of a chunk of images
in (1) and (2), then once more for the survivors; the full (positions x B) distance matrix of
the plain search is never formed, only (positions x block). Exact whatever the data; fast when
the data lets the pruning work. Measured (2 CPU threads, 196 positions an image, a 40,000 x
112 bank): ELPV cells ~6 ms an image against ~23 ms for the plain search (one GEMM + min over
the whole bank) and ~54 ms for torch.cdist; ``benchmarks/test_bench_features.py`` (photograph
crops) 2.0 against 26 and 62 ms. Off the CPU the default is the plain search (one GEMM + min
per group of images): the scan's data-dependent steps each wait for the device
(``benchmarks/gpu_check.py --sections features`` times both on a GPU).
"""
from __future__ import annotations

import torch

__all__ = ["max_nearest_distance", "max_nearest_distance_reference"]

#: float32 elements of the plain search's distance matrix a GEMM (128 MB)
PLAIN_ELEMENTS = 2 ** 25


def _check(patches: torch.Tensor, bank: torch.Tensor) -> None:
    for name, t, dim in (("patches", patches, 3), ("bank", bank, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"max_nearest_distance: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != dim or not t.is_floating_point():
            raise ValueError(f"max_nearest_distance: {name} must be a floating {dim}-D tensor "
                             f"{'(N, P, D)' if dim == 3 else '(B, D)'}, got {t.dtype} of shape "
                             f"{tuple(t.shape)}")
    if patches.shape[2] != bank.shape[1]:
        raise ValueError(f"max_nearest_distance: patch features have {patches.shape[2]} values, the "
                         f"bank's entries {bank.shape[1]}")
    if bank.shape[0] < 1:
        raise ValueError("max_nearest_distance: the bank is empty")
    if patches.shape[1] < 1 and patches.shape[0] > 0:
        raise ValueError("max_nearest_distance: images with no patch positions (P = 0)")


def max_nearest_distance_reference(patches: torch.Tensor, bank: torch.Tensor,
                                   chunk: int | None = None) -> torch.Tensor:
    """The plain search (torch.cdist over the whole bank): (N, P, D), (B, D) -> (N,) in the
    patches' dtype, ``chunk`` images a cdist (None: all at once). The reference of
    :func:`max_nearest_distance`."""
    _check(patches, bank)
    if patches.shape[0] == 0:
        return patches.new_zeros(0)
    bank = bank.to(patches.dtype)[None]
    step = chunk or patches.shape[0]
    return torch.cat([torch.cdist(patches[i:i + step], bank).amin(-1).amax(-1)
                      for i in range(0, patches.shape[0], step)])


def _sq_dist_min(q: torch.Tensor, q2: torch.Tensor, bank: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """min over the bank rows of ||q_i - b||^2 for each row of q (M, D) -> (M,)."""
    return torch.addmm(b2[None], q, bank.T, alpha=-2).amin(1) + q2


def max_nearest_distance(patches: torch.Tensor, bank: torch.Tensor, *, method: str = "auto",
                         block: int = 2048, candidates: int = 2, chunk: int = 16) -> torch.Tensor:
    """max_u min_b ||patches[n, u] - b||_2 for each image n (module doc): patches (N, P, D) and
    bank (B, D) floating, on one device -> (N,) float32. Exact up to float32 rounding of the
    distances, whatever the ``method``: "pruned" (the module doc's scan), "plain" (one GEMM +
    min over the whole bank, ``chunk`` images at a time), or "auto": pruned on the CPU, plain
    elsewhere (a GPU does the whole GEMM faster than the scan's data-dependent steps, each of
    which waits for the device). ``chunk`` images are searched together."""
    _check(patches, bank)
    if method not in ("auto", "pruned", "plain"):
        raise ValueError(f"max_nearest_distance: method must be 'auto', 'pruned' or 'plain', got {method!r}")
    for name, v in (("block", block), ("candidates", candidates), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"max_nearest_distance: {name} must be an int >= 1, got {v!r}")
    N, P, D = patches.shape
    if N == 0:
        return patches.new_zeros(0, dtype=torch.float32)
    bank = bank.to(device=patches.device, dtype=torch.float32).contiguous()
    b2 = (bank * bank).sum(1)
    B = bank.shape[0]
    if method == "plain" or (method == "auto" and patches.device.type != "cpu"):
        per = max(1, PLAIN_ELEMENTS // (P * B))  # images a GEMM: its distance matrix <= 128 MB
        out = [_sq_dist_min(q, (q * q).sum(1), bank, b2).view(-1, P).amax(1)
               for q in (patches[i:i + per].to(torch.float32).reshape(-1, D) for i in range(0, N, per))]
        return torch.cat(out).clamp_min(0).sqrt()
    first = min(block, B)
    out = []
    for i in range(0, N, chunk):
        q = patches[i:i + chunk].to(torch.float32).reshape(-1, D).contiguous()
        n = q.shape[0] // P
        q2 = (q * q).sum(1)
        bound = _sq_dist_min(q, q2, bank[:first], b2[:first])                      # (1)
        k = min(candidates, P)
        cand = (bound.view(n, P).topk(k, dim=1).indices + torch.arange(n, device=q.device)[:, None] * P).flatten()
        exact = bound[cand]
        if first < B:                                                              # (2)
            exact = torch.minimum(exact, _sq_dist_min(q[cand], q2[cand], bank[first:], b2[first:]))
        lo = exact.view(n, k).amax(1)                                              # (n,)
        best = lo.clone()
        rows = torch.arange(n * P, device=q.device)
        keep = bound > lo.repeat_interleave(P)
        rows, bound = rows[keep], bound[keep]
        start = first
        while start < B and rows.numel():                                          # (3)
            end = min(start + block, B)
            bound = torch.minimum(bound, _sq_dist_min(q[rows], q2[rows], bank[start:end], b2[start:end]))
            keep = bound > lo[rows // P]
            rows, bound = rows[keep], bound[keep]
            start = end
        if rows.numel():  # survivors scanned to the end: their bounds are exact
            best = best.scatter_reduce(0, rows // P, bound, reduce="amax")
        out.append(best.clamp_min(0).sqrt())
    return torch.cat(out)
