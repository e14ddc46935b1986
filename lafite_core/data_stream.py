"""The endless, resumable stream of training batches.

The order is a pure function of (seed, images seen): the global stream visits a fresh permutation
of the dataset each epoch, and each process reads its own slice of every step's batch. Resuming at
the number of images seen continues the same stream, so a resumed run reads the same batches as an
uninterrupted one.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from lafite_core.distributed import Distributed


class ResumableSampler(torch.utils.data.Sampler):
    """Indices for one process. The global stream visits a fresh permutation each epoch (seeded by
    seed and epoch); step s takes global positions [start + s*B, start + (s+1)*B) and process r its
    r-th slice of `per_process`. Resuming at `start` = images seen continues the same stream."""

    def __init__(self, size: int, per_process: int, dist: Distributed, seed: int, start: int):
        self.size, self.per_process, self.rank, self.world = size, per_process, dist.rank, dist.world_size
        self.seed, self.start = seed, start

    def _permutation(self, epoch: int) -> Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def __iter__(self) -> Iterator[int]:
        epoch, perm = -1, None
        step_start = self.start
        while True:
            first = step_start + self.rank * self.per_process
            for position in range(first, first + self.per_process):
                e, offset = divmod(position, self.size)
                if e != epoch:
                    epoch, perm = e, self._permutation(e)
                yield int(perm[offset])
            step_start += self.per_process * self.world


def batch_stream(
    dataset: torch.utils.data.Dataset, per_process: int, dist: Distributed, seed: int, start: int, num_workers: int = 0
) -> Iterator[dict]:
    """This process's batches of `per_process` items, from image `start` of the global stream on."""
    sampler = ResumableSampler(len(dataset), per_process, dist, seed, start)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=per_process,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    return iter(loader)


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on `device` (other entries unchanged)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
