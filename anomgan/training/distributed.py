"""Data-parallel training under ``torchrun`` (one process per device, torch.distributed).

When the environment says ``WORLD_SIZE > 1`` (torchrun sets it, with RANK, LOCAL_RANK and the
rendezvous variables), :func:`setup` initialises the default process group: NCCL for CUDA
devices (each process takes ``cuda:LOCAL_RANK``), Gloo on the CPU.

How the replicas stay equal. Every rank draws the same *global* batch indices (the samplers are
seeded identically) and keeps its own contiguous shard of ``batch_size / world_size`` images.
Parameters and buffers are broadcast from rank 0 once at the start, and every optimizer gets a
step pre-hook that all-reduces (averages) the gradients of its parameters right before it
steps. For a loss that is a mean over the batch and shards of equal size the averaged gradient
is the gradient of the global batch, so the replicas stay bit-identical to each other and equal
(to rounding) to one process on the global batch.

Why not ``DistributedDataParallel`` wrappers: the methods call their networks through several
entry points (``discriminator.features``, ``forward_with_features``) and run several forward /
backward passes per step (a GAN's D step, then a G step through D), which DDP's reducer does not
support without reshaping each method around it; averaging at ``optimizer.step`` is the same
all-reduce (torch.distributed's own), independent of how a method computes its losses.

What does NOT match a single process:
* BatchNorm: batch statistics come from each rank's shard, not from the global batch, and the
  running statistics differ per rank. They are averaged across ranks before a checkpoint is
  written and at the end. On CUDA ``sync_batchnorm=True`` (see ``fit``) converts BatchNorm to
  ``torch.nn.SyncBatchNorm`` (GPU only in PyTorch), which computes global-batch statistics.
  Networks without normalisation (``norm="none"``) match exactly.
* Random noise: every rank seeds torch's RNG identically (so random decisions such as which
  batch a step uses agree across ranks, as they must), hence a method that samples z draws the
  same noise of shard size on every rank, not the global batch's noise.
"""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when setup() created the process group (so teardown ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an int, got {os.environ.get('WORLD_SIZE')!r}") from None


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """(DistInfo, the device this process uses). Initialises the process group when launched
    by torchrun with WORLD_SIZE > 1 and none exists yet."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        info = DistInfo(rank, world, local, False)
    elif env_world_size() > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        info = DistInfo(dist.get_rank(), dist.get_world_size(), local, True)
    else:
        return DistInfo(), device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    return info, device


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (in place)."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) across ranks, in place."""
    with torch.no_grad():
        world = dist.get_world_size()
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b.data, op=dist.ReduceOp.SUM)
                b.data.div_(world)


def _average_grads_pre_hook(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    world = dist.get_world_size()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for gr in grads:
        by_dtype.setdefault(gr.dtype, []).append(gr)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for g in group:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n


def sync_gradients_on_step(optimizers: dict[str, torch.optim.Optimizer]) -> list:
    """Make every optimizer average its gradients across ranks before each step; returns the
    hook handles (``.remove()`` them to undo)."""
    return [opt.register_step_pre_hook(_average_grads_pre_hook) for opt in optimizers.values()]


def shard(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (sizes must divide evenly)."""
    if not info.enabled:
        return indices
    per = indices.shape[0] // info.world_size
    return indices[info.rank * per:(info.rank + 1) * per]
