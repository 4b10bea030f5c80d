"""Training on several processes with PyTorch DistributedDataParallel (gloo on CPU, NCCL on
GPUs), for the one shared loop (`ldct.train.loop.train`).

`ldct train ... --nproc N` spawns N ranks on this machine; `torchrun --nproc-per-node N -m
ldct.cli train ...` (one or several nodes) sets the same environment and is used as it is.
Every rank draws the same global batch from an identically seeded sampler and trains on its
own contiguous shard of it; DDP averages the gradients, so N ranks take the same steps as one
process with the whole batch (to floating-point rounding). Rank 0 alone writes checkpoints,
the log and the exported weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ldct.device import pick_device
from ldct.processes import free_port

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: rank, world size and the device it trains on."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, logs and weights."""
        return self.rank == 0

    def shard(self, batch: Batch) -> Batch:
        """This rank's contiguous share of the global batch (every rank drew the same)."""
        if self.world == 1:
            return batch
        size = len(next(iter(batch.values())))
        if size % self.world:
            raise ValueError(f"the batch of {size} does not split over {self.world} processes; "
                             f"choose a batch that is a multiple of --nproc")
        share = size // self.world
        return {k: v[self.rank * share:(self.rank + 1) * share] for k, v in batch.items()}

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each logged value over the ranks (what the global batch gave)."""
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def close(self) -> None:
        if self.world > 1:
            dist.barrier()  # rank 0 has exported before anyone leaves
            dist.destroy_process_group()


def setup(device: str) -> Rank:
    """Join the process group the environment describes (RANK/WORLD_SIZE, as torchrun and
    :func:`launch` set them); a plain process is rank 0 of 1 on ``device``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Rank(0, 1, pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:  # the ranks share the cores instead of each taking them all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(
            os.environ.get("LOCAL_WORLD_SIZE", world))))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return Rank(rank, world, dev)


class _Losses(nn.Module):
    """The method's nets as one module whose forward is the method's losses, so that DDP
    sees every forward pass and synchronises the gradients of whatever the step trains."""

    def __init__(self, method: Any) -> None:
        super().__init__()
        self.nets = method.nets
        self.losses = method.losses

    def forward(self, group: str, batch: Batch) -> dict[str, torch.Tensor]:
        return self.losses(group, batch)


def losses_of(method: Any, rank: Rank):
    """``method.losses`` as the loop calls it: under DDP when there are several ranks (unused
    parameters allowed: a discriminator step leaves the generator's untouched)."""
    if rank.world == 1:
        return method.losses
    ids = [rank.device.index] if rank.device.type == "cuda" else None
    return DistributedDataParallel(_Losses(method), device_ids=ids,
                                   find_unused_parameters=True)


def launch(nproc: int, **train_kwargs: Any) -> Any:
    """Run `ldct.train.loop.train(**train_kwargs)` on ``nproc`` local ranks; rank 0's result."""
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    torch.multiprocessing.spawn(_rank_main, args=(nproc, free_port(), results, train_kwargs),
                                nprocs=nproc, join=True)
    return results.get()


def _rank_main(rank: int, world: int, port: int, results: Any, kwargs: dict[str, Any]) -> None:
    from ldct.train.loop import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    result = train(**kwargs)
    if rank == 0:
        results.put(result)
