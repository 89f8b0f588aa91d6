"""Running a training command under ``accelerate launch``: data parallel on CPU processes, clean exits, and a
per-rank report that lets a test prove every rank ran and holds the same weights.

Seen here: a CPU-only ``accelerate launch --multi_gpu --num_processes 2`` (torchrun + gloo) works only when the
Trainer is told to train on the CPU over gloo (``cpu_ddp_kwargs``), and gloo sometimes aborts (SIGABRT) at exit
unless the process group is destroyed first (``end_distributed``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (or the only one): the one that prints and writes shared files. Read from
    the launcher's environment, so it answers before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def cpu_ddp_kwargs() -> dict[str, Any]:
    """``TrainingArguments`` fields for data-parallel training on CPU processes (torchrun + gloo).

    Without them a CPU-only ``accelerate launch --multi_gpu`` starts N processes that each train alone on all
    the data: accelerate only picks its MULTI_CPU mode when asked for the CPU, so the Trainer sees no
    distributed setup, never wraps the model in DDP and never shards the data (transformers just warns).
    Single-process runs get nothing, so a Mac keeps MPS.
    """
    import torch

    if world_size() > 1 and not torch.cuda.is_available():
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {}


def end_distributed() -> None:
    """Wait for every rank, then tear the process group down: gloo otherwise sometimes aborts (SIGABRT) at exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def sharded_weights() -> bool:
    """Whether ``accelerate launch`` asked for parameter sharding (FSDP, or DeepSpeed ZeRO stage 3)."""
    return (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
            or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")


def abandon_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def weights_digest(model) -> str:
    """sha256 over a model's state dict (sorted names, dtype, shape, bytes): equal digests mean equal weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


RANK_REPORT_ENV = "PSYCHOCOUNSEL_RANK_REPORT"


def input_recorder(model) -> tuple[list[list[int]], Any]:
    """A forward pre-hook noting (rows, tokens, id sum) of each training batch, so ranks can show their data."""
    seen: list[list[int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and module.training:
            seen.append([int(ids.shape[0]), int(ids.numel()), int(ids.sum())])

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def write_rank_report(folder: str, trainer, batches: list[list[int]]) -> None:
    """Debug aid for multi-process runs (``PSYCHOCOUNSEL_RANK_REPORT=<folder>``): rank-N.json per process.

    Meant for DDP; under FSDP or ZeRO-3 each rank holds a shard, so the digests differ by design.
    """
    import json

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)  # with LoRA: base + adapters, unmerged (merging here would mutate it)
    report = {"rank": acc.process_index, "world_size": acc.num_processes,
              "env_rank": int(os.environ.get("RANK", "0")), "distributed_type": str(acc.distributed_type),
              "parallel_mode": str(trainer.args.parallel_mode), "wrapped": type(trainer.model_wrapped).__name__,
              "global_step": trainer.state.global_step, "batches": batches, "weights_sha256": weights_digest(model)}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"rank-{acc.process_index}.json").write_text(json.dumps(report, indent=1))
