"""``train-rm``'s trainer: TRL's ``RewardTrainer`` with two changes that make a step cheaper, same loss.

* **Length-grouped batches** (``group_by_length``, ``batching.LengthGroupedBatches``): a batch pads all its
  chosen and rejected sequences to the longest one, so pairs of similar length go together.
* **The speech runs once per pair** (``share_prompt``). Chosen and rejected start with the same tokens (the
  chat template and the client's speech, often most of the pair), and a causal model's states for those tokens
  do not depend on what follows. So a pair is packed into one row, ``prefix | chosen rest | rejected rest``,
  with a 4D attention mask that lets each rest see the prefix and itself, never the other rest, and position
  ids that restart the rejected rest where the prefix ends: each sequence gets exactly the attention it gets
  alone, and per pair ``P + C + R`` positions go through the model instead of ``2P + C + R``. Each reward is
  read at its sequence's last non-pad token (where TRL reads it), from the score head's per-token output;
  gradients reach the prefix from both rests, as they do when it runs twice. One forward pass per step, so
  DDP, gradient checkpointing and LoRA work as for TRL. SDPA and eager attention take such a mask; other
  attention kernels (flash-attention) get TRL's batches. TRL's ``disable_dropout`` (on by default) keeps
  dropout off; with it on, chosen and rejected would share the prefix's dropout mask.

A KV-cache version (run the prefixes, copy their cache to both rests) cut the FLOPs as much but ran ~10%
slower on CPU than plain TRL (two forward passes and cache copies per step). Packing all 2B sequences into one
row (padding-free) was not used: SDPA on CPU has no variable-length kernel, so a block-diagonal mask costs
attention over the whole packed row.
Same objective, checked: ``bench/bench_train.py`` trains plain TRL and this trainer on the same batches and
compares the per-step losses; ``tests/training/reward/test_trainer.py`` compares the loss with one computed by hand.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput
from trl import RewardConfig, RewardTrainer

from ...errors import UserError
from ..batching import grouped_sampler, keep_length_column, pad_right
from ..common import trainable_gguf_kwargs
from ..distributed import cpu_ddp_kwargs
from .config import RewardModelConfig, accumulation
from .data import TokenizedPairs, describe_overlong, load_training_data, tokenize_pairs


def load_base_model(cfg: RewardModelConfig):
    """(model with a 1-output score head, tokenizer, ModelSource) from any causal-LM checkpoint name."""
    from ...backends.local_models import resolve_model

    src = resolve_model(cfg.model)
    kw = trainable_gguf_kwargs(src)
    set_seed(cfg.seed)  # the score head is initialised at random on load
    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning  # "score.weight newly initialised": expected
    except ImportError:  # pragma: no cover - older/newer TRL without it
        suppress_seqcls_warning = contextlib.nullcontext
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.location, trust_remote_code=cfg.trust_remote_code,
                                                  **({"gguf_file": src.gguf_file} if src.gguf_file else {}))
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(
                src.location, num_labels=1, dtype=getattr(torch, cfg.dtype),
                trust_remote_code=cfg.trust_remote_code, **kw)
    except Exception as e:  # hub unreachable, unknown architecture, corrupt file: one line
        where = "from the Hugging Face hub" if src.kind == "hub" else f"from {src.location}"
        raise UserError(f"model {cfg.model!r}: cannot load {where}: "
                        f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
    if cfg.chat_template:
        p = Path(cfg.chat_template)
        if not p.is_file():
            raise UserError(f"chat_template {cfg.chat_template!r}: file not found")
        tokenizer.chat_template = p.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {cfg.model!r}: tokenizer has no chat template; set chat_template to a .jinja file")
    if tokenizer.pad_token is None:  # TRL's rule too: the score is read at the last token that is not padding
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, src


def trl_args(cfg: RewardModelConfig, has_eval: bool):
    """Our config -> TRL's ``RewardConfig`` (which is a ``TrainingArguments``)."""

    bf16 = cfg.bf16_mixed
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    sched_kw = {"min_lr_rate": cfg.min_lr_rate} if cfg.lr_scheduler == "cosine_with_min_lr" else None
    evaluating = cfg.eval_steps is not None and has_eval
    return RewardConfig(
        **cpu_ddp_kwargs(),
        ddp_find_unused_parameters=False,  # every trainable weight (body or adapters, and the head) is used
        output_dir=cfg.output_dir, seed=cfg.seed, report_to="none", disable_tqdm=not cfg.progress,
        per_device_train_batch_size=cfg.per_device_batch_size, gradient_accumulation_steps=accumulation(cfg),
        per_device_eval_batch_size=cfg.per_device_batch_size,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, lr_scheduler_kwargs=sched_kw,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm, bf16=bf16, fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        dataloader_pin_memory=torch.cuda.is_available(),
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "epoch", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if evaluating else "no", eval_steps=cfg.eval_steps if evaluating else None,
        max_length=None,  # already enforced (and counted) by tokenize_pairs
        center_rewards_coefficient=cfg.center_rewards_coefficient,
    )


class StepTimer(TrainerCallback):
    """Records the wall time of each optimizer step (the manifest's median step time)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t0)


@dataclass
class PreparedRewardRun:
    """A ready ``RewardTrainer`` and what went into it (tests use it to check the loss before training)."""

    trainer: Any
    tokenizer: Any
    source: Any
    train: TokenizedPairs
    evals: dict[str, TokenizedPairs]
    files: list[Path]
    timer: StepTimer


def prepare_reward_training(cfg: RewardModelConfig, callbacks: Sequence[Any] = (),
                            log: Callable[[str], None] | None = None) -> PreparedRewardRun:
    """Load data and model, tokenize (counting over-long pairs), and build TRL's ``RewardTrainer``."""
    log = log or (lambda msg: None)
    train_rows, eval_rows, files = load_training_data(cfg)
    model, tokenizer, src = load_base_model(cfg)
    train = tokenize_pairs(train_rows, tokenizer, cfg.max_length, cfg.overlong, cfg.margin_scale)
    log(describe_overlong("train", train.stats))
    if not train.chosen_ids:
        raise UserError(f"no training pairs left after dropping over-long ones (max_length {cfg.max_length})")
    evals = {}
    for name, rows in eval_rows.items():
        evals[name] = tokenize_pairs(rows, tokenizer, cfg.max_length, cfg.overlong, cfg.margin_scale)
        log(describe_overlong(name, evals[name].stats))
    if not evals:
        log("eval: no held-out pairs (give eval_pairs, or pair files with dev/test rows)")
    args = trl_args(cfg, has_eval=bool(evals))
    first_eval = next(iter(evals.values()), None)
    timer = StepTimer()
    mask_dtype = packed_mask_dtype(model) if cfg.share_prompt and score_head(model) is not None else None
    packed = mask_dtype is not None
    trainer = PairRewardTrainer(
        model=model, args=args, processing_class=tokenizer, group_by_length=cfg.group_by_length,
        data_collator=SharedPromptCollator(tokenizer.pad_token_id, mask_dtype) if packed else None,
        train_dataset=train.to_dataset(cfg.margin, packed),
        eval_dataset=first_eval.to_dataset(cfg.margin, packed) if args.eval_strategy != "no" and first_eval else None,
        peft_config=cfg.lora.peft_config("SEQ_CLS") if cfg.lora else None, callbacks=[timer, *callbacks],
    )
    return PreparedRewardRun(trainer, tokenizer, src, train, evals, files, timer)


# ---------------------------------------------------------------- one prompt, two responses


def shared_prefix_length(chosen: Sequence[int], rejected: Sequence[int], pad_token_id: int | None) -> int:
    """Tokens chosen and rejected share at the start, capped so that each sequence keeps its last non-pad token
    (where the reward is read) after the cut. 0: nothing can be shared."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    return max(min(n, _last_real(chosen, pad_token_id), _last_real(rejected, pad_token_id)), 0)


def _last_real(ids: Sequence[int], pad_token_id: int | None) -> int:
    """Index of the last token that is not padding: where ``*ForSequenceClassification`` reads the score."""
    return next((i for i in range(len(ids) - 1, -1, -1) if ids[i] != pad_token_id), -1)


@dataclass
class SharedPromptCollator:
    """Rows of ``chosen_ids`` / ``rejected_ids`` -> one packed row per pair: the shared prefix, the rest of the
    chosen sequence, the rest of the rejected one, right-padded, with a (B, 1, L, L) attention mask in which each
    continuation sees the prefix and itself (causally) and never the other continuation, and position ids that
    restart the rejected continuation where the prefix ends. So each of the 2B sequences gets exactly the
    attention it gets alone; ``read_index`` (B, 2) is where its reward is read (its last non-pad token, as TRL
    reads it). ``mask_dtype``: ``bool`` for SDPA (True = attend), a float dtype for eager attention (additive).

    A batch in which some pair shares nothing is collated as TRL does (``input_ids`` / ``attention_mask`` of
    the 2B whole sequences); so is every batch when ``mask_dtype`` is None."""

    pad_token_id: int
    mask_dtype: Any = "bool"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        chosen = [list(e["chosen_ids"]) for e in examples]
        rejected = [list(e["rejected_ids"]) for e in examples]
        shared = [shared_prefix_length(c, r, self.pad_token_id) for c, r in zip(chosen, rejected)]
        out: dict[str, Any] = {}
        if self.mask_dtype is None or min(shared) == 0:
            out["input_ids"], out["attention_mask"] = pad_right(chosen + rejected, self.pad_token_id)
        else:
            rows = [c + r[p:] for c, r, p in zip(chosen, rejected, shared)]
            width = max(len(x) for x in rows)
            ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            pos = torch.zeros((len(rows), width), dtype=torch.long)
            seg = torch.full((len(rows), width), 3, dtype=torch.long)  # 0 prefix, 1 chosen, 2 rejected, 3 pad
            read = torch.zeros((len(rows), 2), dtype=torch.long)
            for i, (c, r, p) in enumerate(zip(chosen, rejected, shared)):
                n_c, n_r = len(c), len(r) - p
                ids[i, :n_c + n_r] = torch.as_tensor(rows[i])
                pos[i, :n_c] = torch.arange(n_c)
                pos[i, n_c:n_c + n_r] = torch.arange(p, p + n_r)
                seg[i, :p], seg[i, p:n_c], seg[i, n_c:n_c + n_r] = 0, 1, 2
                read[i, 0] = _last_real(c, self.pad_token_id)
                read[i, 1] = n_c + _last_real(r, self.pad_token_id) - p
            q, k = seg[:, :, None], seg[:, None, :]
            causal = torch.ones(width, width, dtype=torch.bool).tril()
            allowed = causal & ((k == 0) | (k == q)) & (q != 3)
            allowed |= torch.eye(width, dtype=torch.bool) & (q == 3)  # a pad sees itself: no all-masked row, no NaN
            if self.mask_dtype == "bool":
                mask = allowed[:, None]
            else:  # eager attention adds the mask to the scores
                mask = torch.zeros(allowed.shape, dtype=self.mask_dtype).masked_fill_(
                    ~allowed, torch.finfo(self.mask_dtype).min)[:, None]
            out.update(input_ids=ids, attention_mask=mask, position_ids=pos, read_index=read,
                       n_tokens=torch.tensor(sum(len(c) + len(r) for c, r in zip(chosen, rejected))))
        if "margin" in examples[0]:
            out["margin"] = torch.tensor([e["margin"] for e in examples], dtype=torch.float)
        return out


def packed_mask_dtype(model) -> Any:
    """The attention-mask form ``SharedPromptCollator`` must build for this model, or None when its attention
    takes no custom 4D mask (flash-attention, flex) or has sliding-window layers (transformers uses a 4D mask
    as given, so the window would be lost): then batches are TRL's."""
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return None
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl == "sdpa":
        return "bool"
    if impl == "eager":
        return next(p for p in model.parameters() if p.is_floating_point()).dtype
    return None


def score_head(model):
    """The module that turns hidden states into per-token rewards (``score`` in transformers' sequence
    classifiers; PEFT wraps it but keeps the name), or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "score", None)


class PairRewardTrainer(RewardTrainer):
    """TRL's trainer with length-grouped batches and, for packed batches (``SharedPromptCollator``), TRL's
    loss and logged metrics computed from the rewards read at each sequence's own last token."""

    def __init__(self, *a: Any, group_by_length: bool = True, **kw: Any):
        self.pc_group_by_length = group_by_length
        super().__init__(*a, **kw)
        self._token_rewards = None
        head = score_head(self.model)  # after PEFT wrapped it, if it did
        if head is not None:
            head.register_forward_hook(lambda module, args, out: setattr(self, "_token_rewards", out))

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = keep_length_column(self._signature_columns)

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        sampler = grouped_sampler(self.args, ds, self.pc_group_by_length)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "read_index" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # From here on the lines of RewardTrainer.compute_loss (TRL 1.16), on rewards read from a packed row.
        mode = "train" if self.model.training else "eval"
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
              position_ids=inputs["position_ids"], use_cache=False)
        token_rewards, self._token_rewards = self._token_rewards, None  # (B, L, 1) from the score head
        read = inputs["read_index"]
        rows = torch.arange(read.shape[0], device=read.device)
        logits = torch.cat([token_rewards[rows, read[:, 0]], token_rewards[rows, read[:, 1]]])  # (2B, 1)
        rewards_chosen, rewards_rejected = torch.chunk(logits.squeeze(-1), chunks=2)
        if "margin" in inputs:
            loss = -nn.functional.logsigmoid(rewards_chosen - rewards_rejected - inputs["margin"]).mean()
        else:
            loss = -nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean()
        if self.args.center_rewards_coefficient is not None:
            loss += self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        if mode == "train":  # real tokens of both whole sequences, as TRL counts them
            tokens = inputs["n_tokens"]
            self._total_train_tokens += self.accelerator.gather_for_metrics(tokens).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            all_rewards = self.accelerator.gather(logits)
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            accuracy = (rewards_chosen > rewards_rejected).float().mean()
            self._metrics[mode]["accuracy"].append(self.accelerator.gather_for_metrics(accuracy).mean().item())
            margin = (rewards_chosen - rewards_rejected).mean()
            self._metrics[mode]["margin"].append(self.accelerator.gather_for_metrics(margin).mean().item())
        return (loss, SequenceClassifierOutput(loss=loss, logits=logits)) if return_outputs else loss
