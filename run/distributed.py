"""
run/distributed.py: several processes of one run. `torchrun --nproc_per_node=N train.py ...` runs N copies of
train.py, one per GPU. Optimizer step k takes the same batch as in one process, positions [k B, (k+1) B)
of the epoch's order (epoch_permutation), split between the processes: process r holds positions
r, r + N, r + 2N, ... (DistributedSampler's shard, seeded so that its order is epoch_permutation). Each
process weighs its per-example losses by N / (examples in the batch), so that the gradients' average is
the gradient of the batch's mean loss, as in one process. Shares differ by at most one example; the
smaller ones are topped up with a repeated example of weight 0 so that every process runs the same
passes. Process 0 alone writes files and prints.
"""
import contextlib
import math
import os

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from run.errors import UsageError


def distributed_env():
    """(rank, world size, local rank) from torchrun's environment, or (0, 1, 0) for `python train.py`."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise UsageError("WORLD_SIZE is set but RANK / LOCAL_RANK are not integers: start several processes "
                         "with torchrun --nproc_per_node=N train.py ...") from None


def epoch_permutation(seed, epoch, n):
    """The order of the n training examples in `epoch`: a function of (seed, epoch) alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def epoch_shard(seed, epoch, n, rank, world):
    """Process `rank`'s positions of the epoch's order: epoch_permutation(seed, epoch, n)[rank::world]
    (DistributedSampler pads the order to a multiple of `world` by repeating its start; those
    positions >= n are never read)."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed * 1_000_003)
    sampler.set_epoch(epoch)  # the sampler's order is randperm(n) seeded with seed * 1_000_003 + epoch
    return list(sampler)


def batch_share(shard, start, end, rank, world):
    """Process `rank`'s examples of the batch at positions [start, end) of the epoch's order, and their
    loss weights: ceil((end - start) / world) rows on every process, padding rows weighing 0."""
    # this process's positions p in [start, end) are p % world == rank: shard[lo:hi]
    lo, hi = math.ceil((start - rank) / world), math.ceil((end - rank) / world)
    rows = math.ceil((end - start) / world)
    indices, weights = shard[lo:hi], [1.0] * (hi - lo)
    filler = shard[min(lo, len(shard) - 1)]
    return indices + [filler] * (rows - len(indices)), weights + [0.0] * (rows - len(indices))


def gather_interleaved(local, n, rank, world):
    """Every process's predictions, back in example order: `local` holds examples rank, rank + world, ...
    of n. Exact: each example once, none dropped."""
    if world == 1:
        return local
    size = math.ceil(n / world)
    padded = torch.zeros(size, dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    full = torch.empty(n, dtype=local.dtype, device=local.device)
    for r, part in enumerate(parts):
        full[r::world] = part[:len(range(r, n, world))]
    return full


def rank0_first(rank, world, fn):
    """fn() on process 0, then on the others: downloads and files made once, then read from disk."""
    if rank == 0:
        result = fn()
    if world > 1:
        dist.barrier()
    return result if rank == 0 else fn()



@contextlib.contextmanager
def process_group(device_name):
    """(rank, world size, device) of this process. Under torchrun: inside a process group (NCCL on
    GPUs, gloo on the CPU), each process on GPU LOCAL_RANK; without torchrun: (0, 1, --device)."""
    rank, world, local_rank = distributed_env()
    device = torch.device(device_name)
    if "WORLD_SIZE" not in os.environ:
        yield 0, 1, device
        return
    if device.type == "cuda":
        if device.index is not None and world > 1:
            raise UsageError(f"--device {device_name}: under torchrun each process takes GPU LOCAL_RANK; "
                             f"use --device cuda (or CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"torchrun started process LOCAL_RANK={local_rank}, but this machine has "
                             f"{torch.cuda.device_count()} GPUs: use --nproc_per_node <= {torch.cuda.device_count()}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    try:
        yield rank, world, device
    finally:
        dist.destroy_process_group()

