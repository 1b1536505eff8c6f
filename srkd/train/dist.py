"""Processes and devices: torchrun's process group, each rank's device, precision and CPU threads.

Under ``torchrun`` each rank draws its own batches (the rank is part of the sampling seed), every
rank holds identical weights and EMA, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SrkdError
from . import config as C


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, fn, share: bool = False):
        """Run ``fn`` on rank 0 only; its SrkdError is raised on every rank, and with ``share`` its
        (picklable) result is sent to every rank, else the other ranks get None.

        Without this, an error on rank 0 would leave the other ranks waiting in a collective.
        """
        if not self.active:
            return fn()
        import torch.distributed as dist

        result, error = None, None
        if self.main:
            try:
                result = fn()
            except SrkdError as exc:
                error = str(exc)
        box = [error, result if share else None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise SrkdError(box[0])
        return result if self.main else box[1]


def setup_distributed(device_pref: str) -> Dist:
    """Join the torchrun process group if launched under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    owns = False
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, local_world, owns)


def rank_device(pref: str, d: Dist) -> torch.device:
    from ..precision import resolve_device

    device = resolve_device(pref)
    if device.type == "cuda" and d.active:
        device = torch.device("cuda", d.local_rank)
    return device


def train_precision(pref: str, device: torch.device, model: nn.Module) -> str:
    from ..precision import resolve_precision
    from ..models.registry import describe

    if device.type == "mps" and pref == "auto":
        return "fp32"  # autocast training on MPS is not dependable across PyTorch versions
    precision = resolve_precision(pref, device)
    desc = describe(model)
    if pref == "auto" and precision == "bf16" and not desc.supports_bf16:
        return "fp32"  # loses more than 0.05 dB in bf16: its spec, from benchmarks/precision_table.py
    if precision == "bf16" and not desc.supports_bf16:
        raise SrkdError(f"{desc.arch} does not support bf16; use --precision fp32")
    if precision == "fp16" and not desc.supports_fp16:
        raise SrkdError(f"{desc.arch} does not support fp16; use --precision bf16 or fp32")
    return precision


def cpu_threads(cfg: C.TrainConfig, d: Dist) -> int:
    if cfg.train.threads:
        return cfg.train.threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        cores = min(cores, int(env) * d.local_world)
    # Oversubscribing cores makes every convolution wait on the slowest thread (several-fold
    # slower steps), so torch threads plus data threads never exceed this process's share.
    return max(1, cores // d.local_world - cfg.data.workers)
