"""Offline DPO (``psychocounsel train-dpo``): TRL's ``DPOTrainer`` behind one thin subclass.

    psychocounsel train-dpo runs/demo/pairs --config configs/train/dpo_cpu.yaml --out runs/dpo-cpu
    psychocounsel train-dpo train-00000-of-00001.parquet --config configs/train/dpo_paper.yaml \\
        -o model=meta-llama/Llama-3.1-8B-Instruct --out runs/dpo-8b

The paper trains offline DPO with beta 0.1 on its preference pairs; everything else (loss, batching,
checkpoints, distributed training) is TRL's. What this module adds:

- **Reference log-probs cached on disk.** The reference model is frozen, so its log-probs of every
  (prompt, chosen) and (prompt, rejected) are a pure function of the reference weights, the tokenized
  data, ``max_length``/truncation and the numerics (dtype, device, library versions). TRL's
  ``precompute_ref_log_probs`` computes them once per run; ``reference: cached`` also stores them in
  ``ref_cache_dir`` under a hash of all of those, so a second run (another beta, lr, batch or seed)
  skips the reference pass. The key hashes the reference weights themselves (TRL's ``hash_module``)
  and the token ids themselves (which covers the pair files, chat template and tokenizer), so a stale
  entry cannot be found: anything that changes the numbers changes the key.
- **Over-long pairs counted** (``max_length``): truncated (TRL's default), dropped, or an error;
  pairs whose prompt alone fills ``max_length`` carry no signal and TRL drops them: counted too.
- **Length-grouped batches** (``group_by_length``, ``LengthGroupedBatches``): less padding per step.
  bench/bench_train.py: cached reference + grouping train 1.62x the tokens/s of plain TRL on a CPU.
- A resolved config, data hash, library versions and TRL's metrics in ``manifest.json``.

Output: a standard HF checkpoint in ``--out``. With ``lora`` it is the PEFT adapter
(``adapter_config.json`` + ``adapter_model.safetensors``, load it onto the base model) unless
``lora.merge: true``, which saves the merged full model instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import click
from pydantic import BaseModel, ConfigDict, Field

from ..config import load_yaml_config
from ..errors import UserError
from .common import data_hash, load_pairs_dataset, pair_files, write_manifest

CACHE_FORMAT = 1  # bump when the cache file layout or the key's meaning changes


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank (16: PEFT's common default for 1B-8B models).")
    alpha: int = Field(32, ge=1, description="LoRA scaling alpha (2 x r, the usual choice).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Modules that get adapters; 'all-linear' = every linear layer except lm_head.")
    merge: bool = Field(False, description="Save the merged full model instead of the adapter.")


class DPOTrainConfig(BaseModel):
    """Everything that shapes a DPO run. Defaults are the paper's offline DPO where it gives a number."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[str] = Field(default_factory=list, description="Pair files or folders (the command's PAIRS).")
    out: str | None = Field(None, description="Output folder (the command's --out).")
    model: str = Field("embedded", description=(
        "Policy (and reference) model: a checkpoint folder, a .gguf file, 'embedded' (SmolLM2-135M), or a hub id."))
    chat_template: str | None = Field(None, description=(
        "Jinja chat template (text, or a path to a file) used instead of the tokenizer's; needed for base models."))
    split: str | None = Field("train", description=(
        "Train only on pairs of this split (files named train-*/train.* carry it); null = every row."))
    eval_split: str | None = Field(None, description="Also evaluate on this split of PAIRS (e.g. dev); null = none.")
    beta: float = Field(0.1, gt=0, description="DPO beta, the KL strength (paper: 0.1).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="sigmoid = the DPO paper's loss.")
    learning_rate: float = Field(5e-7, gt=0, description="Peak learning rate (paper's DPO-Iter: 5e-7).")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = use epochs.")
    batch_size: int = Field(64, ge=1, description="Pairs per optimizer step over all devices (paper: 64).")
    per_device_batch_size: int = Field(8, ge=1, description=(
        "Pairs per forward pass on one device; gradient accumulation makes up batch_size."))
    max_length: int = Field(2048, ge=8, description="Tokens of prompt + response (paper's reward-model length).")
    overlong: Literal["truncate", "drop", "error"] = Field("truncate", description=(
        "Pairs longer than max_length: truncate the response end (TRL), drop the pair, or stop with an error."))
    reference: Literal["cached", "precomputed", "live"] = Field("cached", description=(
        "Reference log-probs: cached = computed once and stored on disk for later runs; precomputed = once per "
        "run; live = a reference forward on every step (plain TRL)."))
    ref_cache_dir: str | None = Field(None, description=(
        "Where cached reference log-probs live; null = $XDG_CACHE_HOME/psychocounsel/ref_logps."))
    ref_batch_size: int | None = Field(None, ge=1, description=(
        "Pairs per reference forward when precomputing; null = per_device_batch_size."))
    group_by_length: bool = Field(True, description="Batch pairs of similar length together (less padding).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup.")
    warmup: float = Field(0.1, ge=0, description=(
        "Warmup: a fraction of the steps if < 1, else a step count (0.1: the alignment-handbook DPO recipes)."))
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm (transformers' default).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~20% slower.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "auto = bf16 on a GPU, fp32 on a CPU (bf16 training is slower than fp32 on most CPUs)."))
    device: Literal["auto", "cpu"] = Field("auto", description="auto = the GPU when there is one.")
    lora: LoraSettings | None = Field(None, description="Train a LoRA adapter instead of every weight; null = full.")
    seed: int = Field(0, description="Seeds data order, LoRA init and dropout.")
    logging_steps: int = Field(10, ge=1, description="Log TRL's metrics every this many steps.")
    save_steps: int = Field(500, ge=1, description="Checkpoint every this many steps (for resume).")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept in out/checkpoints.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every this many steps; null = only at the end.")
    resume: bool = Field(True, description="Continue from the last checkpoint in out/checkpoints if there is one.")
    keep_checkpoints: bool = Field(False, description="Keep out/checkpoints after a finished run.")


# Fields a resumed run may change without changing what it trains.
_RESUME_FREE = {"resume", "keep_checkpoints", "ref_cache_dir", "ref_batch_size", "logging_steps", "save_total_limit"}


def load_dpo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> DPOTrainConfig:
    """YAML (or nothing: the defaults) plus dotted ``key=value`` overrides (values parsed as YAML)."""
    return load_yaml_config(DPOTrainConfig, path, overrides)


# ---------------------------------------------------------------- reference log-prob cache


def default_ref_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "psychocounsel" / "ref_logps"


def ref_cache_key(parts: dict[str, Any]) -> str:
    """Hash of everything that changes reference log-probs (see ``RefCachingDPOTrainer._key_parts``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tokens_hash(dataset) -> str:
    """Content hash of the token ids, in row order: covers the pairs, the chat template and the tokenizer."""
    import numpy as np
    import pyarrow.compute as pc

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
    import torch

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


def _make_trainer_class():
    """Build the DPOTrainer subclass lazily (trl imports in ~5 s; the CLI's --help must not pay that)."""
    import datasets
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from transformers import set_seed
    from trl import DPOTrainer

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
            if "length" not in self._signature_columns:  # keep it for the length-grouped sampler
                self._signature_columns = [*self._signature_columns, "length"]

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if not self.pc_cfg.group_by_length or "length" not in ds.column_names:
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedBatches(ds["length"], self.args.per_device_train_batch_size,
                                        self.args.data_seed if self.args.data_seed is not None else self.args.seed)

        # -- reference log-probs
        def compute_ref_log_probs(self, model, inputs):
            self.ref_forward_batches += 1
            return super().compute_ref_log_probs(model, inputs)

        def _key_parts(self, dataset) -> dict[str, Any]:
            import torch
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
            """TRL's reference pass over the pairs longest first (batches of similar length, less padding;
            the longest batch first, so memory runs out at once if it will), then back in dataset order."""
            if "length" not in dataset.column_names:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            order = np.argsort(-np.asarray(dataset["length"]), kind="stable")
            done = super()._precompute_ref_logps(dataset.select(order), name, batch_size)
            cols = {}
            for c in ("ref_chosen_logps", "ref_rejected_logps"):
                values = np.empty(len(order), dtype=np.float64)
                values[order] = np.asarray(done[c], dtype=np.float64)
                cols[c] = values
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

    return RefCachingDPOTrainer


class LengthGroupedBatches:
    """Indices for batches of similar length: shuffle, cut into megabatches of 50 batches, sort each by length,
    cut into batches, shuffle the batch order (a partial batch last, so later batches stay aligned).

    transformers' LengthGroupedSampler shrinks its megabatch to len(data) // (4 x batch) batches, which on a
    few hundred pairs is one batch: no grouping at all (measured: 33.7% padding, the same as random order).
    50 batches per megabatch is its cap, kept here as the bound on how far order departs from random.
    The order is a function of (seed, epoch), so a resumed run replays it."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, megabatch: int = 50):
        self.lengths, self.batch_size, self.seed, self.megabatch = list(lengths), batch_size, seed, megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls this at every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.megabatch
        batches = []
        for start in range(0, len(perm), size):
            chunk = sorted(perm[start:start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        tail = [b for b in batches if len(b) < self.batch_size]
        order = torch.randperm(len(full), generator=g).tolist()
        return iter([i for b in [full[j] for j in order] + tail for i in b])


def _read_ref_cache(path: Path, rows: int):
    """The cached two columns as an arrow table, or None when absent or unreadable (then recomputed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return None
    if table.num_rows != rows or set(table.column_names) != {"ref_chosen_logps", "ref_rejected_logps"}:
        return None  # the key includes the row count, so this is a damaged file, not a stale one
    return table


# ---------------------------------------------------------------- model loading


def _load_model_and_tokenizer(cfg: DPOTrainConfig, dtype):
    from .common import load_causal_lm

    return load_causal_lm(cfg.model, dtype, cfg.chat_template)


def _precision(cfg: DPOTrainConfig):
    import torch

    gpu = cfg.device == "auto" and torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and gpu)
    return (torch.bfloat16 if bf16 else torch.float32), bf16, not gpu


# ---------------------------------------------------------------- core


def build_dpo_trainer(cfg: DPOTrainConfig, callbacks: Sequence[Any] = ()):
    """The configured trainer (reference log-probs already precomputed or read from the cache).

    Split from ``train_dpo`` so tests and the online-DPO loop can take one step or compute a loss."""
    from transformers import set_seed
    from trl import DPOConfig

    if not cfg.pairs:
        raise UserError("train-dpo: no pair files given")
    if not cfg.out:
        raise UserError("train-dpo: no output folder (--out)")
    files = pair_files(cfg.pairs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.per_device_batch_size * world
    if cfg.batch_size % per_step:
        raise UserError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size x processes "
                        f"= {per_step}")
    train_ds = _pairs(cfg.pairs, cfg.split)
    eval_ds = _pairs(cfg.pairs, cfg.eval_split) if cfg.eval_split else None
    dtype, bf16, use_cpu = _precision(cfg)
    set_seed(cfg.seed)  # before LoRA init, which TRL does before Trainer seeds
    src, model, tokenizer = _load_model_and_tokenizer(cfg, dtype)
    ref_model = None
    if cfg.reference == "live" and cfg.lora is None:
        # TRL would reload the reference from config._name_or_path, which misses a GGUF's file name.
        ref_model = _load_model_and_tokenizer(cfg, dtype)[1]
    peft_config = None
    if cfg.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    out = Path(cfg.out)
    args = DPOConfig(
        output_dir=str(out / "checkpoints"), seed=cfg.seed, data_seed=cfg.seed,
        beta=cfg.beta, loss_type=[cfg.loss_type], learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size, per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.batch_size // per_step,
        max_length=cfg.max_length, truncation_mode="keep_start",
        precompute_ref_log_probs=cfg.reference != "live", precompute_ref_batch_size=cfg.ref_batch_size,
        train_sampling_strategy="random",  # group_by_length: our sampler (see LengthGroupedBatches)
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16, fp16=False, use_cpu=use_cpu, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if (eval_ds is not None and cfg.eval_steps) else "no", eval_steps=cfg.eval_steps,
        report_to="none", dataloader_num_workers=0,
    )
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(model=model, ref_model=ref_model, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds, processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[_log_last_step(), *callbacks], pc_cfg=cfg, pc_data_files=files)
    trainer.pc_source = src
    return trainer


def _log_last_step():
    """Log at the final step too, so the manifest's metrics cover the end of training even when the step
    count is not a multiple of logging_steps."""
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_log = True

    return LogLastStep()


def _pairs(spec: Sequence[str], split: str | None):
    try:
        ds = load_pairs_dataset(spec, split=split)
    except UserError as e:
        if split and "no pairs" in str(e):
            raise UserError(f"{e} (files named train-*/dev-*/test-* carry a split; set split: null to use "
                            "every row)") from None
        raise
    return ds.select_columns(["prompt", "chosen", "rejected"])


def _check_out(cfg: DPOTrainConfig, files: list[Path]) -> bool:
    """Refuse to overwrite a finished run; on resume, refuse a changed config. Returns: resume now?"""
    out = Path(cfg.out)
    if (out / "manifest.json").exists():
        raise UserError(f"{out}: already holds a trained model (manifest.json): pick another --out or delete it")
    ckpt = out / "checkpoints"
    state = ckpt / "psychocounsel_dpo.json"
    has = any(ckpt.glob("checkpoint-*")) if ckpt.is_dir() else False
    now = json.loads(json.dumps({"config": {k: v for k, v in cfg.model_dump().items() if k not in _RESUME_FREE},
                                 "data_hash": data_hash(files)}, default=str))
    if has and not cfg.resume:
        raise UserError(f"{ckpt}: holds checkpoints of an unfinished run: set resume: true to continue it, "
                        "or pick another --out")
    if has and state.is_file():
        from .common import check_same_run

        check_same_run(ckpt, json.loads(state.read_text()), now)
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate/torchrun every rank runs this
        ckpt.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(now, indent=2))
    return has


def train_dpo(cfg: DPOTrainConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train, save the policy (full model, LoRA adapter, or merged LoRA) and ``manifest.json``; return the
    manifest's metrics, the over-long report and the reference-cache report."""
    if not cfg.pairs or not cfg.out:
        raise UserError("train-dpo: needs pair files and --out")
    files = pair_files(cfg.pairs)
    resume = _check_out(cfg, files)
    trainer = build_dpo_trainer(cfg, callbacks)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    train_seconds = time.time() - t0
    out = Path(cfg.out)
    metrics = _train_metrics(trainer, result, train_seconds)
    if trainer.eval_dataset is not None:
        metrics["eval"] = dict(trainer.evaluate())
    output = _save_policy(trainer, cfg, out)
    trainer.accelerator.wait_for_everyone()
    report = {
        "metrics": metrics, "data": trainer.length_report, "output": output,
        "ref_cache": {"mode": cfg.reference, "ref_forward_batches": trainer.ref_forward_batches,
                      "hit": bool(trainer.ref_cache_report)
                      and all(r.get("hit") for r in trainer.ref_cache_report.values()),
                      **trainer.ref_cache_report},
    }
    if trainer.is_world_process_zero():
        write_manifest(out, recipe="dpo", config=cfg.model_dump(), data=files, metrics=metrics,
                       extra={k: v for k, v in report.items() if k != "metrics"})
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return {"out": str(out), **report}


_LOGGED = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
           "logps/chosen", "logps/rejected", "grad_norm", "learning_rate", "num_tokens")


def _train_metrics(trainer, result, seconds: float) -> dict[str, Any]:
    """TRL's logged metrics: the last logged values, the full per-log history, tokens/s."""
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = logs[-1] if logs else {}
    tokens = last.get("num_tokens", 0.0)
    return {
        "train_loss": result.training_loss, "steps": result.global_step, "epoch": trainer.state.epoch,
        "train_seconds": round(seconds, 3), "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if seconds and tokens else None,
        "last": {k: last[k] for k in _LOGGED if k in last},
        "history": [{"step": h["step"], **{k: h[k] for k in _LOGGED if k in h}} for h in logs],
    }


def _save_policy(trainer, cfg: DPOTrainConfig, out: Path) -> dict[str, Any]:
    src = trainer.pc_source
    base = {"base_model": cfg.model, "base_location": src.location, "base_gguf_file": src.gguf_file}
    kind = "full" if cfg.lora is None else "merged_lora" if cfg.lora.merge else "lora_adapter"
    if kind == "merged_lora":
        if trainer.is_world_process_zero():
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(out)
    else:
        trainer.save_model(str(out))  # full model, or the adapter alone for a PEFT model (rank 0 writes)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(out)
    return {"kind": kind, **base}


# ---------------------------------------------------------------- command


def _print_report(res: dict[str, Any]) -> None:
    m = res["metrics"]
    last = m.get("last", {})
    click.echo(f"trained {m['steps']} steps in {m['train_seconds']:.1f} s "
               f"({m['tokens_per_second'] or 0:.0f} tokens/s): loss {m['train_loss']:.4f}, "
               f"reward accuracy {last.get('rewards/accuracies', float('nan')):.3f}, "
               f"reward margin {last.get('rewards/margins', float('nan')):.4f}")
    for name, d in res["data"].items():
        click.echo(f"{name} pairs: {d['pairs_used']} used of {d['pairs_in']}; {d['over_max_length']} over "
                   f"max_length={d['max_length']} ({d['policy']}), {d['prompt_fills_max_length']} dropped "
                   f"(prompt fills max_length); longest {d['longest']} tokens")
    rc = res["ref_cache"]
    if rc["mode"] == "cached":
        click.echo(f"reference log-probs: {'cache hit' if rc['hit'] else 'computed and cached'} "
                   f"({rc['ref_forward_batches']} reference batches run)")
    if "eval" in m:
        click.echo("eval: " + ", ".join(f"{k}={v:.4g}" for k, v in m["eval"].items()
                                         if isinstance(v, float) and ("reward" in k or k.endswith("loss"))))
    click.echo(f"{res['output']['kind']} saved to {res['out']}/ (manifest.json beside it)")


@click.command("train-dpo")
@click.argument("pairs", nargs=-1, type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML preset, e.g. configs/train/dpo_cpu.yaml (default: the built-in defaults).")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o beta=0.2 -o lora.r=8 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder for the policy and manifest.json.")
def train_dpo_cmd(pairs: tuple[str, ...], config_path: str | None, overrides: tuple[str, ...],
                  out: str | None) -> None:
    """Offline DPO on preference pairs (ours or the published parquet) through TRL's DPOTrainer.

    Presets: configs/train/dpo_cpu.yaml (SmolLM2-135M on a CPU), configs/train/dpo_paper.yaml (beta 0.1).
    A second run on the same model and pairs reuses the cached reference log-probs.
    """
    cfg = load_dpo_config(config_path, overrides)
    update = {k: v for k, v in (("pairs", list(pairs)), ("out", out)) if v}
    _print_report(train_dpo(cfg.model_copy(update=update)))
