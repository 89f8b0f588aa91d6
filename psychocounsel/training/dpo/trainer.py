"""``train-dpo``'s trainer: TRL's ``DPOTrainer`` plus over-long pair accounting, a ``length`` column for
length-grouped batches, and reference log-probs cached on disk (the cache key is explained in
``training.dpo``'s docstring). Imports torch and TRL: the recipe loads it when training starts."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from transformers import set_seed
from trl import DPOTrainer

from ...errors import UserError
from ..batching import grouped_sampler, keep_length_column
from ..common import data_hash
from .config import DPOTrainConfig

CACHE_FORMAT = 1  # bump when the cache file layout or the key's meaning changes


def default_ref_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "psychocounsel" / "ref_logps"


def ref_cache_key(parts: dict[str, Any]) -> str:
    """Hash of everything that changes reference log-probs (see ``RefCachingDPOTrainer._key_parts``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tokens_hash(dataset) -> str:
    """Content hash of the token ids, in row order: covers the pairs, the chat template and the tokenizer."""
    h = hashlib.sha256()
    table = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).with_format("arrow")[:]
    for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
        col = table.column(name).combine_chunks()
        h.update(name.encode())
        h.update(np.asarray(pc.list_value_length(col), dtype=np.int64).tobytes())
        h.update(np.asarray(pc.list_flatten(col), dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def weights_hash(model, skip_adapters: bool = False) -> str:
    """Hash of a model's tensors (values and dtypes). ``skip_adapters``: hash the frozen base under a LoRA
    model, which is what TRL runs as the reference (adapters disabled)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if skip_adapters and "lora_" in name:
            continue
        t = tensor.detach().cpu()
        h.update(name.encode() + str(t.dtype).encode())
        if t.dtype not in (torch.float32, torch.float16, torch.float64, torch.int64, torch.int32):
            t = t.to(torch.float32)  # numpy has no bf16/fp8
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


class RefCachingDPOTrainer(DPOTrainer):
    """DPOTrainer that counts over-long pairs, adds a ``length`` column for length-grouped batches, and
    reads/writes precomputed reference log-probs from a disk cache. Every numeric path is TRL's."""

    def __init__(self, *a, pc_cfg: DPOTrainConfig, pc_data_files: list[Path], **kw):
        self.pc_cfg, self.pc_data_files = pc_cfg, pc_data_files
        self.length_report: dict[str, dict[str, Any]] = {}
        self.ref_cache_report: dict[str, dict[str, Any]] = {}
        self.ref_forward_batches = 0
        super().__init__(*a, **kw)
        # The reference pass draws from the global RNG (DataLoader seeds); reseed so that a cache hit and a
        # miss start training from the same RNG state: same batches, same dropout, same losses.
        set_seed(self.args.seed)

    # -- data: over-long pairs and lengths
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        n_in = len(dataset)
        ds = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        table = ds.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).with_format("arrow")[:]
        lens = {c: np.asarray(pc.list_value_length(table.column(c).combine_chunks()), dtype=np.int64)
                for c in ("prompt_ids", "chosen_ids", "rejected_ids")}
        length = lens["prompt_ids"] + np.maximum(lens["chosen_ids"], lens["rejected_ids"])
        over = np.flatnonzero(length > args.max_length)
        report = {"pairs_in": n_in, "prompt_fills_max_length": n_in - len(ds), "over_max_length": int(len(over)),
                  "max_length": args.max_length, "longest": int(length.max()) if len(length) else 0,
                  "mean_tokens": round(float(length.mean()), 1) if len(length) else 0.0,
                  "policy": self.pc_cfg.overlong}
        if self.pc_cfg.overlong == "error" and (len(over) or report["prompt_fills_max_length"]):
            raise UserError(f"{dataset_name} pairs: {len(over)} longer than max_length={args.max_length} "
                            f"(longest {report['longest']} tokens) and {report['prompt_fills_max_length']} whose "
                            "prompt alone fills it: raise max_length or set overlong: truncate|drop")
        if self.pc_cfg.overlong == "drop" and len(over):
            keep = np.setdiff1d(np.arange(len(ds)), over)
            ds, length = ds.select(keep), length[keep]
        if len(ds) == 0:
            raise UserError(f"{dataset_name} pairs: none left within max_length={args.max_length}")
        report["pairs_used"] = len(ds)
        self.length_report[dataset_name] = report
        return ds.add_column("length", length.tolist())

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = keep_length_column(self._signature_columns)  # for the length-grouped sampler

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        sampler = grouped_sampler(self.args, ds, self.pc_cfg.group_by_length)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    # -- reference log-probs
    def compute_ref_log_probs(self, model, inputs):
        self.ref_forward_batches += 1
        return super().compute_ref_log_probs(model, inputs)

    def _key_parts(self, dataset) -> dict[str, Any]:
        import transformers
        import trl

        cfg, args = self.pc_cfg, self.args
        model = self.ref_model or self.model
        if self.ref_model is None and self.pc_cfg.lora is not None:
            model_hash = weights_hash(self.model, skip_adapters=True)
        else:  # TRL already hashed the reference for its own cache: reuse it
            model_hash = self._precompute_model_hash or weights_hash(model)
        template = self._tokenizer.chat_template or ""
        return {
            "format": CACHE_FORMAT, "reference_weights": model_hash, "adapter_disabled": cfg.lora is not None,
            "tokens": tokens_hash(dataset), "rows": len(dataset), "data_files": data_hash(self.pc_data_files),
            "chat_template": hashlib.sha256(template.encode()).hexdigest()[:16],
            "max_length": args.max_length, "truncation_mode": args.truncation_mode, "ld_alpha": args.ld_alpha,
            "bf16": bool(args.bf16), "fp16": bool(args.fp16), "device": self.accelerator.device.type,
            "attn": getattr(model.config, "_attn_implementation", None),
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "torch": torch.__version__},
        }

    def _ref_pass(self, dataset, name, batch_size):
        """TRL's reference pass (``compute_ref_log_probs`` on every batch, gathered over processes) over the
        pairs longest first (batches of similar length, less padding; the longest batch first, so memory runs
        out at once if it will), then back in dataset order. Written out rather than calling TRL's
        ``_precompute_ref_logps``, which hands the result between processes through a file under each
        process's own temporary folder for an in-memory dataset: a second process cannot find it."""
        from torch.utils.data import DataLoader
        from trl.trainer import dpo_trainer as trl_dpo

        if "length" in dataset.column_names:
            order = np.argsort(-np.asarray(dataset["length"]), kind="stable")
        else:
            order = np.arange(len(dataset))
        loader = self.accelerator.prepare(DataLoader(
            dataset.select(order), batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory))
        if self.ref_model is None and self.is_deepspeed_enabled:  # as TRL: place/gather the ZeRO weights
            if self._precompute_engine is None:
                self._precompute_engine = trl_dpo.prepare_deepspeed(self.model, self.accelerator)
            model = self._precompute_engine
        else:
            model = self.ref_model or self.model
        chosen, rejected = [], []
        for batch in loader:
            c, r = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(model, batch))
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
        cols = {}
        for col, parts in (("ref_chosen_logps", chosen), ("ref_rejected_logps", rejected)):
            values = np.empty(len(order), dtype=np.float64)
            values[order] = np.concatenate([x.numpy() for x in parts]) if parts else []
            cols[col] = values
        return datasets.concatenate_datasets([dataset, datasets.Dataset.from_dict(cols)], axis=1)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if self.pc_cfg.reference != "cached":
            t0 = time.time()
            out = self._ref_pass(dataset, name, batch_size)
            self.ref_cache_report[name] = {"hit": False, "seconds": round(time.time() - t0, 3)}
            return out
        folder = Path(self.pc_cfg.ref_cache_dir) if self.pc_cfg.ref_cache_dir else default_ref_cache_dir()
        parts = self._key_parts(dataset)
        key = ref_cache_key(parts)
        path = folder / f"{key}.parquet"
        t0 = time.time()
        cached = _read_ref_cache(path, len(dataset))
        if cached is not None:
            self.ref_cache_report[name] = {"hit": True, "key": key, "path": str(path),
                                           "seconds": round(time.time() - t0, 3)}
            cached = datasets.Dataset(datasets.table.InMemoryTable(cached))
            return datasets.concatenate_datasets([dataset, cached], axis=1)
        before = self.ref_forward_batches
        out = self._ref_pass(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            cols = {c: pa.array(out[c], pa.float64()) for c in ("ref_chosen_logps", "ref_rejected_logps")}
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            pq.write_table(pa.table(cols), tmp)
            os.replace(tmp, path)  # whole file or nothing: a crash never leaves a half entry
            path.with_suffix(".json").write_text(json.dumps({"key": key, **parts}, indent=2))
        self.accelerator.wait_for_everyone()
        self.ref_cache_report[name] = {"hit": False, "key": key, "path": str(path),
                                       "ref_forward_batches": self.ref_forward_batches - before,
                                       "seconds": round(time.time() - t0, 3)}
        return out


def _read_ref_cache(path: Path, rows: int):
    """The cached two columns as an arrow table, or None when absent or unreadable (then recomputed)."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return None
    if table.num_rows != rows or set(table.column_names) != {"ref_chosen_logps", "ref_rejected_logps"}:
        return None  # the key includes the row count, so this is a damaged file, not a stale one
    return table
