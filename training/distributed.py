"""Data parallelism over processes started by torchrun (gloo on CPU, NCCL on GPU).

Without torchrun's environment everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Replicas:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def start(cls, device: torch.device) -> Replicas:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def agree(self, *values: float | bool) -> tuple:
        """The largest of each value over the replicas: a shared clock, and a flag
        that is true everywhere if it is true anywhere."""
        if not self.active:
            return values
        reduced = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return tuple(type(v)(r) for v, r in zip(values, reduced.tolist()))

    def mean(self, value: float) -> float:
        """The mean of `value` over the replicas (each trains on its own rows)."""
        if not self.active:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return total.item() / self.world_size

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every replica's `tensor` (same shape on all), in rank order."""
        if not self.active:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return parts

    def share(self, value):
        """The main replica's `value` (any JSON-like object), on every replica."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_in_sync(self, model: torch.nn.Module) -> None:
        """Replicas must hold identical weights; a difference means a bug, so stop."""
        if not self.active:
            return
        checksum = torch.stack([p.detach().double().sum().cpu() for p in model.parameters()])
        parts = self.gather(checksum)
        if not all(torch.equal(parts[0], part) for part in parts[1:]):
            raise RuntimeError("data-parallel replicas hold different weights")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active:
            dist.destroy_process_group()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"run.device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device is {name!r} but no CUDA GPU is available; use auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"run.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device
