"""Iterative online DPO (``psychocounsel train-online-dpo``): the paper's loop, written out here.

    psychocounsel train-online-dpo configs/train/online_dpo_cpu.yaml --out runs/online-dpo-cpu
    psychocounsel train-online-dpo configs/train/online_dpo_paper.yaml -o model=meta-llama/Llama-3.1-8B-Instruct \\
        -o reward_model=runs/rm-8b --out runs/online-dpo-8b

Each round r: draw ``speeches_per_round`` train speeches (seeded by r), sample ``samples_per_speech`` responses
to each from the CURRENT policy, score them with the reward model, keep (best, worst) per speech as a
preference pair (skipped, and counted, when their reward gap is below ``min_gap``), take one DPO pass over
those pairs with TRL's ``DPOTrainer``, then score the new policy's greedy replies to ``dev_speeches`` dev
speeches. The checkpoint with the best dev reward (the initial policy included) is the run's result. The paper
shows this beats offline DPO on the same reward model (its Figure 4).

Why our own loop and not ``trl.experimental``'s online trainers: those are experimental (their API moves between
releases), generate inside the training step (no vLLM server of the user's choice, no resume per round) and do
not keep a best checkpoint by dev reward.

Resuming: ``state.json`` in ``--out`` lists finished rounds (metrics, checkpoint, dev reward) and the best one.
Rerunning the same command continues at the first unfinished round; a round cut off midway is redone from its
start (its sampled pairs are a pure function of the policy and the round's seeds). Raising ``rounds`` on a
finished run continues it. Changing anything else that shapes training is refused.

One process only: under ``accelerate launch`` / torchrun (more than one process) the command stops with an
error. Only the DPO step of a round could be spread over processes; sampling (the bulk of a round) belongs on
a vLLM server, which shards the policy over GPUs itself.

Generation: ``backend: local`` runs psychocounsel's micro-batched transformers backend on the current policy's
checkpoint folder. ``backend: openai`` sends the requests to an OpenAI-compatible server (vLLM, SGLang) that
must serve the current policy under ``served_model``: at the start the initial ``model``, then each round's
new checkpoint. ``reload_command`` (run after every round with ``{checkpoint}`` filled in) is where that
happens, e.g. a script that restarts ``vllm serve {checkpoint} --served-model-name policy`` and waits for
``/v1/models``; without one, the loop pauses and asks you to reload the server by hand (vLLM >= 0.8 also
offers ``/v1/load_lora_adapter`` for LoRA policies, with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import click
from pydantic import BaseModel, ConfigDict, Field

from ..config import load_yaml_config
from ..errors import UserError
from .common import chat, check_same_run, data_hash, freeze_below, write_manifest
from .distributed import world_size
# Speech draws, sampling, scoring and pair selection live in online_dpo_sampling; their names stay importable here.
from .online_dpo_sampling import (COLLAPSE_SHARE, _make_backend, best_round, dev_reward, diversity, draw_speeches,
    generate, load_speeches, score, select_pairs)

STATE_FORMAT = 1


class OnlineDPOConfig(BaseModel):
    """Everything that shapes an online DPO run. Defaults are the paper's where it gives a number."""

    model_config = ConfigDict(extra="forbid")

    out: str | None = Field(None, description="Output folder (the command's --out).")
    model: str = Field("embedded", description="Initial policy: checkpoint folder, .gguf file, 'embedded' or hub id.")
    reward_model: str | None = Field(None, description=(
        "Reward model folder (train-rm / multi-head output) scoring sampled responses."))
    reward_weights: dict[str, float] | None = Field(None, description=(
        "Principle weights for a per-principle reward model (e.g. safety: 2); null = its own overall."))
    pairs: list[str] = Field(default_factory=list, description=(
        "Pair files or folders whose unique `question`s are the speeches (train and dev splits)."))
    speeches: str | None = Field(None, description=(
        "Alternative train speeches: a .jsonl/.csv/.parquet file with a `speech_column`; used instead of pairs."))
    dev_speeches_file: str | None = Field(None, description="Dev speeches file (same format); default: pairs' dev split.")
    speech_column: str = Field("text", description="Column holding the speech in speeches files.")
    train_split: str = Field("train", description="Split of the pair files the rounds draw speeches from.")
    dev_split: str = Field("dev", description="Split of the pair files used for dev evaluation.")
    rounds: int = Field(16, ge=1, description="Rounds (paper: 1,600 steps at 100 steps per round = 16).")
    speeches_per_round: int = Field(6400, ge=1, description="Speeches drawn per round (paper: 6,400).")
    samples_per_speech: int = Field(8, ge=2, description="Responses sampled per speech (paper: 8).")
    min_gap: float = Field(0.0, ge=0, description=(
        "Skip a speech whose best-worst reward gap is below this (a zero gap is always skipped: no preference)."))
    temperature: float = Field(0.7, gt=0, le=2, description="Sampling temperature (0.7: common vLLM default).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(512, ge=1, description="Cap on tokens per sampled response.")
    dev_speeches: int = Field(200, ge=0, description="Dev speeches scored after each round (0: no dev eval).")
    dev_max_tokens: int | None = Field(None, ge=1, description="Cap for greedy dev replies; null = max_tokens.")
    backend: Literal["local", "openai"] = Field("local", description="Where sampling runs (see module docs).")
    base_url: str = Field("http://localhost:8000/v1", description="OpenAI-compatible server (backend: openai).")
    served_model: str = Field("policy", description="Model name the server serves the current policy under.")
    api_key_env: str | None = Field(None, description="Env var with the server's API key (vLLM: none needed).")
    concurrency: int = Field(256, ge=1, description="Requests in flight (openai backend).")
    reload_command: str | None = Field(None, description=(
        "Run after each round to make the server serve {checkpoint}; null + openai = pause and ask."))
    generation_batch_size: int = Field(16, ge=1, description="Local backend micro-batch (16: ~118 tok/s SmolLM2 CPU).")
    device: str = Field("auto", description="auto | cpu | cuda for local generation and reward scoring.")
    beta: float = Field(0.1, gt=0, description="DPO beta (paper: 0.1).")
    reference: Literal["previous", "initial"] = Field("previous", description=(
        "DPO reference: the policy at the start of each round (iterative DPO, the paper) or the initial policy."))
    learning_rate: float = Field(5e-7, gt=0, description="Learning rate (paper: 5e-7).")
    epochs_per_round: float = Field(1.0, gt=0, description=(
        "Passes over each round's pairs (paper: 1); more steps per round when rounds are small."))
    sft_weight: float = Field(0.0, ge=0, description=(
        "Add this x the NLL of the chosen (best) sample to the DPO loss (iterative RPO, Pang et al. 2024); 0 = "
        "plain DPO (the paper)."))
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("constant", description=(
        "Schedule within a round; constant keeps every round's step size equal."))
    batch_size: int = Field(64, ge=1, description="Pairs per optimizer step (paper: 64).")
    per_device_batch_size: int = Field(8, ge=1, description="Pairs per forward; accumulation makes up batch_size.")
    max_length: int = Field(2048, ge=8, description="Tokens of prompt + response per DPO example.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 on a GPU, fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Less memory, ~20% slower.")
    train_layers: int | None = Field(None, ge=1, description=(
        "Update only the top N transformer blocks (embeddings frozen): ~4x faster on CPU; null = every weight."))
    keep_all_rounds: bool = Field(False, description="Keep every round's checkpoint (default: best and latest).")
    seed: int = Field(0, description="Seeds speech draws, sampling streams and training.")


# Fields a resumed run may change: they do not change what earlier rounds trained.
_RESUME_FREE = {"rounds", "keep_all_rounds", "reload_command", "base_url", "concurrency", "api_key_env",
                "generation_batch_size", "out"}


def load_online_dpo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> OnlineDPOConfig:
    """YAML (or the defaults) plus dotted ``key=value`` overrides (values parsed as YAML)."""
    return load_yaml_config(OnlineDPOConfig, path, overrides)


# ---------------------------------------------------------------- training


def _load_policy(name: str, dtype):
    from .common import load_causal_lm

    return load_causal_lm(name, dtype)[1:]


def dpo_update(cfg: OnlineDPOConfig, policy: str, reference: str, pairs: list[dict[str, Any]], out_dir: Path,
               round_no: int) -> dict[str, Any]:
    """``epochs_per_round`` passes of DPO (TRL's DPOTrainer) over the round's pairs, plus the chosen NLL when
    ``sft_weight`` > 0; the updated policy is saved to ``out_dir``."""
    import datasets
    import torch
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    gpu = cfg.device != "cpu" and torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and gpu)
    dtype = torch.bfloat16 if bf16 else torch.float32
    per_step = cfg.per_device_batch_size  # one process: train_online_dpo refuses several
    if cfg.batch_size % per_step:
        raise UserError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size x processes "
                        f"= {per_step}")
    set_seed(cfg.seed + round_no)
    model, tok = _load_policy(policy, dtype)
    if cfg.train_layers is not None:
        freeze_below(model, cfg.train_layers)
    # "previous": the policy as it enters the round is the reference; TRL precomputes its log-probs from the
    # model itself before the first step, so no second copy is held. "initial": load that model as reference.
    ref_model = _load_policy(reference, dtype)[0] if reference != policy else None
    ds = datasets.Dataset.from_list([{"prompt": chat(p["question"]),
                                      "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                      "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    scratch = out_dir.parent / f".trainer-{round_no:03d}"
    args = DPOConfig(
        output_dir=str(scratch), seed=cfg.seed + round_no, beta=cfg.beta, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, num_train_epochs=cfg.epochs_per_round,
        loss_type=["sigmoid"] + (["sft"] if cfg.sft_weight else []),
        loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight else None,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.batch_size // per_step, max_length=cfg.max_length,
        precompute_ref_log_probs=True, activation_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16, fp16=False, use_cpu=not gpu, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ds, processing_class=tok)
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)  # a checkpoint folder is complete or absent
    shutil.rmtree(scratch, ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = logs[-1] if logs else {}
    del trainer, model, ref_model
    if gpu:  # local generation of the next round loads the new checkpoint on the same GPU
        import gc

        gc.collect()
        torch.cuda.empty_cache()
    return {"steps": result.global_step, "train_loss": result.training_loss, "train_seconds": round(seconds, 3),
            "reward_accuracy": last.get("rewards/accuracies"), "reward_margin": last.get("rewards/margins")}


# ---------------------------------------------------------------- the loop


def _fingerprint(cfg: OnlineDPOConfig, data: list[Path]) -> dict[str, Any]:
    conf = {k: v for k, v in cfg.model_dump().items() if k not in _RESUME_FREE}
    return json.loads(json.dumps({"config": conf, "data_hash": data_hash(data) if data else None}, default=str))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)  # state.json is whole or the previous one: a crash never leaves half a state


def _load_state(out: Path, fp: dict[str, Any], scorer_name: str) -> dict[str, Any]:
    path = out / "state.json"
    if not path.is_file():
        return {"format": STATE_FORMAT, **fp, "reward_model": scorer_name, "rounds": [],
                "initial_dev_reward": None, "best_round": 0, "best_checkpoint": None}
    state = json.loads(path.read_text())
    check_same_run(path, state, fp, data="the speech/pair files")
    return state


def _reload_server(cfg: OnlineDPOConfig, checkpoint: str) -> None:
    if cfg.backend != "openai":
        return
    if cfg.reload_command:
        cmd = [part.replace("{checkpoint}", checkpoint) for part in shlex.split(cfg.reload_command)]
        rc = subprocess.run(cmd).returncode
        if rc:
            raise UserError(f"reload_command exited with {rc}: the server may not serve {checkpoint}")
    else:
        click.confirm(f"Reload the server at {cfg.base_url} with {checkpoint} as {cfg.served_model!r}, then "
                      "continue?", default=True, abort=True, err=True)


def train_online_dpo(cfg: OnlineDPOConfig, scorer: Any = None,
                     backend_factory: Callable[[], Any] | None = None,
                     echo: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run (or continue) the rounds; return the final state. ``scorer`` (anything with ``score_batch``) and
    ``backend_factory`` replace the configured reward model and backend (tests, custom judges)."""
    if not cfg.out:
        raise UserError("train-online-dpo: no output folder (--out)")
    if world_size() > 1:
        raise UserError(f"train-online-dpo runs in one process, not {world_size()} (accelerate launch / torchrun): "
                        "each round samples, scores and trains in turn; run it without accelerate launch, and "
                        "serve the policy with vLLM (backend: openai) for fast sampling")
    out = Path(cfg.out)
    train, dev, data = load_speeches(cfg)
    if scorer is None:
        if not cfg.reward_model:
            raise UserError("train-online-dpo: no reward_model given")
        from .scorers import load_scorer

        scorer = load_scorer(cfg.reward_model, weights=cfg.reward_weights, device=cfg.device)
    backend_factory = backend_factory or (lambda: _make_backend(cfg))
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out, _fingerprint(cfg, data), str(getattr(scorer, "name", type(scorer).__name__)))
    rounds_dir = out / "rounds"
    rounds_dir.mkdir(exist_ok=True)
    state_path = out / "state.json"
    policy = state["rounds"][-1]["checkpoint"] if state["rounds"] else cfg.model
    if cfg.backend == "openai" and (cfg.reload_command or state["rounds"]):
        _reload_server(cfg, policy)  # a resumed run's server must serve the latest round, not the initial model
    if state["initial_dev_reward"] is None and dev and not state["rounds"]:
        t0 = time.time()
        state["initial_dev_reward"] = dev_reward(cfg, backend_factory, scorer, cfg.model, dev)[0]
        echo(f"initial policy: dev reward {state['initial_dev_reward']:.4f} ({time.time() - t0:.1f} s)")
    _write_json(state_path, state)
    for r in range(len(state["rounds"]) + 1, cfg.rounds + 1):
        t0 = time.time()
        speeches = draw_speeches(train, cfg.speeches_per_round, cfg.seed, r)
        gen_model = cfg.served_model if cfg.backend == "openai" else policy
        responses = generate(backend_factory(), gen_model, speeches, cfg.samples_per_speech,
                             temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                             seed=cfg.seed * 10_007 + r)
        t_gen = time.time() - t0
        rewards = score(scorer, speeches, responses)
        t_score = time.time() - t0 - t_gen
        pairs, stats = select_pairs(speeches, responses, rewards, cfg.min_gap)
        div = diversity([x for rs in responses for x in rs])
        stats.update({"sample_chars": div["chars"], "sample_distinct_2": div["distinct_2"],
                      "sample_top_opening_share": div["top_opening_share"]})
        ckpt = rounds_dir / f"round-{r:03d}"
        if pairs:
            reference = cfg.model if cfg.reference == "initial" else policy
            train_stats = dpo_update(cfg, policy, reference, pairs, ckpt, r)
            new_policy = str(ckpt)
        else:  # nothing to learn from: the policy carries over unchanged
            train_stats, new_policy = {"steps": 0, "train_loss": None, "train_seconds": 0.0}, policy
        _reload_server(cfg, new_policy)
        t1 = time.time()
        dev_r, dev_replies = dev_reward(cfg, backend_factory, scorer, new_policy, dev)
        dev_div = diversity(dev_replies)
        stats.update({"dev_chars": dev_div["chars"], "dev_top_opening_share": dev_div["top_opening_share"],
                      "dev_distinct_share": len(set(dev_replies)) / len(dev_replies) if dev_replies else None})
        row = {"round": r, **stats, **train_stats, "dev_reward": dev_r, "checkpoint": new_policy,
               "generate_seconds": round(t_gen, 3), "score_seconds": round(t_score, 3),
               "dev_seconds": round(time.time() - t1, 3), "seconds": round(time.time() - t0, 3)}
        with (out / "pairs.jsonl").open("a", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps({"round": r, **p}, ensure_ascii=False) + "\n")
        state["rounds"].append(row)
        state["best_round"] = best_round(state["initial_dev_reward"], state["rounds"])
        state["best_checkpoint"] = cfg.model if state["best_round"] == 0 else \
            state["rounds"][state["best_round"] - 1]["checkpoint"]
        _write_json(state_path, state)
        with (out / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
        echo(f"round {r}/{cfg.rounds}: {stats['pairs']} pairs, {stats['skipped']} skipped, mean reward "
             f"{stats['mean_reward']:.4f}, gap {stats['mean_gap']:.4f}, {train_stats['steps']} steps, dev reward "
             f"{'-' if dev_r is None else f'{dev_r:.4f}'}, samples {div['chars']:.0f} chars, distinct-2 "
             f"{div['distinct_2'] or 0:.2f} ({row['seconds']:.1f} s)")
        if dev_replies and ((dev_div["top_opening_share"] or 0) >= COLLAPSE_SHARE
                            or stats["dev_distinct_share"] < COLLAPSE_SHARE):
            echo(f"warning: round {r}'s greedy dev replies: {dev_div['top_opening_share']:.0%} open with the same five "
                 f"words, {stats['dev_distinct_share']:.0%} distinct. The policy is collapsing onto a template the "
                 "reward model over-rewards: read the replies (pairs.jsonl) and keep an earlier round")
        policy = new_policy
        if not cfg.keep_all_rounds:
            keep = {Path(state["best_checkpoint"]).name, Path(policy).name}
            for d in rounds_dir.glob("round-*"):
                if d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
    metrics = {"rounds": len(state["rounds"]), "initial_dev_reward": state["initial_dev_reward"],
               "best_round": state["best_round"], "best_checkpoint": state["best_checkpoint"],
               "best_dev_reward": (state["initial_dev_reward"] if state["best_round"] == 0 else
                                   state["rounds"][state["best_round"] - 1]["dev_reward"]),
               "per_round": state["rounds"]}
    write_manifest(out, recipe="online-dpo", config=cfg.model_dump(), data=data, metrics=metrics,
                   extra={"reward_model": state["reward_model"]})
    best = state["best_checkpoint"]
    if best and Path(best).is_dir() and Path(best).parent == rounds_dir:
        write_manifest(best, recipe="online-dpo", config=cfg.model_dump(), data=data, metrics=metrics,
                       extra={"reward_model": state["reward_model"]})
    return state


# ---------------------------------------------------------------- command


def _train_online_dpo_command(config_path: str, overrides: tuple[str, ...], out: str | None) -> None:
    """Iterative online DPO: sample from the current policy, score with a reward model, train on best-vs-worst.

    Presets: configs/train/online_dpo_cpu.yaml (SmolLM2-135M on a CPU), configs/train/online_dpo_paper.yaml.
    Rerun the same command to continue an interrupted run at its next round.
    """
    cfg = load_online_dpo_config(config_path, overrides)
    if out:
        cfg = cfg.model_copy(update={"out": out})
    state = train_online_dpo(cfg, echo=click.echo)
    click.echo(f"best: round {state['best_round']} ({state['best_checkpoint']}); state.json, metrics.jsonl, "
               f"pairs.jsonl and manifest.json in {cfg.out}/")


train_online_dpo_cmd = click.command("train-online-dpo")(
    click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))(
        click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config field, e.g. -o rounds=4 -o beta=0.2 (repeatable).")(
            click.option("--out", type=click.Path(file_okay=False),
                         help="Output folder: rounds/, state.json, metrics.jsonl, manifest.json.")(
                _train_online_dpo_command))))
