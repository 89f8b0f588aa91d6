"""``train-online-dpo``: one round's DPO step, the loop over rounds with its resume state, and the command. What
the loop does and why it is ours, not TRL's, is in the package docstring (``training.online_dpo``).

    psychocounsel train-online-dpo configs/train/online_dpo_cpu.yaml --out runs/online-dpo-cpu
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import click

from ...dataset import atomic
from ...errors import UserError
from ..common import (
    chat,
    check_same_run,
    data_hash,
    freeze_below,
    load_causal_lm,
    write_manifest,
)
from ..distributed import world_size
from .config import RESUME_FREE, OnlineDPOConfig, load_online_dpo_config
from .sampling import (
    COLLAPSE_SHARE,
    best_round,
    dev_reward,
    diversity,
    draw_speeches,
    flag_note,
    generate,
    load_speeches,
    make_backend,
    safety_constraint,
    score_samples,
    select_pairs,
    unsafe_samples,
)

STATE_FORMAT = 1


# ---------------------------------------------------------------- training


def _load_policy(name: str, dtype):
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
    conf = {k: v for k, v in cfg.model_dump().items() if k not in RESUME_FREE}
    return json.loads(json.dumps({"config": conf, "data_hash": data_hash(data) if data else None}, default=str))


def _write_json(path: Path, obj: Any) -> None:
    # state.json is whole or the previous one: a crash never leaves half a state
    atomic.write_text(path, json.dumps(obj, indent=2, default=str))


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


def _suite_note(suite: dict[str, Any]) -> str:
    rate = suite["pass_rate"]
    return (f"{'-' if rate is None else f'{rate:.1%}'} ({suite['passed']}/{suite['n']} replies pass"
            f"{', ' + str(suite['errors']) + ' errors' if suite['errors'] else ''})")


def _constraint_note(stats: dict[str, Any]) -> str:
    """The round log's account of the safety constraint, when it is on."""
    if stats.get("safety_threshold") is None:
        return ""
    return (f", safety constraint: {stats['unsafe_samples']}/{stats['samples']} samples below "
            f"{stats['safety_threshold']:.4f}, {stats['constraint_changed']} speeches' best/worst changed by it")


def run_suite_on(cfg: OnlineDPOConfig, backend_factory: Callable[[], Any], policy: str, folder: Path
                 ) -> dict[str, Any]:
    """The safety suite on ``policy`` (sampled as the rounds sample: the bare speech as the user turn), through the
    evaluation's session and call cache in ``folder`` (one per round: a server serves every round under one name,
    so a shared cache would answer for the wrong checkpoint). Returns the overall pass rate and its counts."""
    from ...config import LocalBackendConfig, OpenAIBackendConfig, SamplingConfig
    from ...evaluation.config import SideConfig, SuiteConfig, SuiteRunConfig
    from ...evaluation.suite import run_policy_suite

    gate = cfg.safety_suite
    assert gate is not None
    backend = (LocalBackendConfig(device=cfg.device, batch_size=cfg.generation_batch_size) if cfg.backend == "local"
               else OpenAIBackendConfig(base_urls=[cfg.base_url], api_key_env=cfg.api_key_env,
                                        concurrency=cfg.concurrency, structured_output=False))
    model = cfg.served_model if cfg.backend == "openai" else policy
    run = SuiteRunConfig(
        name=f"online-dpo {folder.name}", out_dir=str(folder), backends={"policy": backend},
        policy=SideConfig(name=folder.name, backend="policy", model=model, system_prompt="",
                          sampling=SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p,
                                                  max_tokens=cfg.dev_max_tokens or cfg.max_tokens)),
        suite=SuiteConfig(probes=gate.probes, samples=gate.samples, seed=gate.seed))
    o = run_policy_suite(run, backend=backend_factory())["overall"]
    return {"pass_rate": o["pass_rate"], "passed": o["passed"], "n": o["n"], "errors": o["errors"]}


def _suite_rate(state: dict[str, Any], round_no: int) -> float | None:
    """Suite pass rate of round ``round_no`` (0: the initial policy); None when not measured."""
    got = state.get("initial_suite") if round_no == 0 else state["rounds"][round_no - 1].get("suite")
    return (got or {}).get("pass_rate")


def select_best(state: dict[str, Any], margin: float | None) -> tuple[int, str | None]:
    """The best round by dev reward (``best_round``) among rounds the safety suite has not refused, with the
    latest round just appended and ``state["best_round"]`` still the previous best. The latest round is refused
    (and a line for the log returned) when it would be best but its suite pass rate is below the previous best's
    by more than ``margin`` (None: no suite, nothing refused)."""
    rounds, before = state["rounds"], state["best_round"]
    best = best_round(state["initial_dev_reward"], [x for x in rounds if not x.get("suite_refused")])
    if margin is None or not rounds or best != rounds[-1]["round"]:
        return best, None
    new, old = _suite_rate(state, best), _suite_rate(state, before)
    if new is None or old is None or new >= old - margin:
        return best, None
    rounds[-1]["suite_refused"] = True
    return before, (f"round {best} not selected as best: safety suite pass rate {new:.1%} is below "
                    f"{'the initial policy' if before == 0 else f'round {before}'}'s {old:.1%} by more than the "
                    f"margin {margin:.1%}; best stays {'the initial policy' if before == 0 else f'round {before}'}")


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
        from ..scoring import load_scorer

        # weighted: rewards in the logs and dev stay the weighted overall; the constraint is applied here
        scorer = load_scorer(cfg.reward_model, weights=cfg.reward_weights, device=cfg.device, combine="weighted")
    backend_factory = backend_factory or (lambda: make_backend(cfg))
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
    if cfg.safety_suite is not None and not state["rounds"] and state.get("initial_suite") is None:
        state["initial_suite"] = run_suite_on(cfg, backend_factory, cfg.model, out / "suite" / "initial")
        echo(f"initial policy: safety suite {_suite_note(state['initial_suite'])}")
    _write_json(state_path, state)
    selection: tuple[float | None, str] | None = None  # decided on the first scores: do they have a safety head?
    for r in range(len(state["rounds"]) + 1, cfg.rounds + 1):
        t0 = time.time()
        speeches = draw_speeches(train, cfg.speeches_per_round, cfg.seed, r)
        gen_model = cfg.served_model if cfg.backend == "openai" else policy
        responses = generate(backend_factory(), gen_model, speeches, cfg.samples_per_speech,
                             temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                             seed=cfg.seed * 10_007 + r)
        t_gen = time.time() - t0
        rewards, safety = score_samples(scorer, speeches, responses)
        t_score = time.time() - t0 - t_gen
        if selection is None:
            selection = safety_constraint(cfg, scorer, safety is not None)
            echo(selection[1])
        pairs, stats = select_pairs(speeches, responses, rewards, cfg.min_gap, unsafe_samples(safety, selection[0]),
                                    flag_veto=cfg.flag_veto)
        stats["safety_threshold"] = selection[0]
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
        suite = None if cfg.safety_suite is None else \
            run_suite_on(cfg, backend_factory, new_policy, out / "suite" / f"round-{r:03d}")
        row = {"round": r, **stats, **train_stats, "dev_reward": dev_r, "checkpoint": new_policy,
               "generate_seconds": round(t_gen, 3), "score_seconds": round(t_score, 3),
               "dev_seconds": round(time.time() - t1, 3), "seconds": round(time.time() - t0, 3)}
        if suite is not None:
            row["suite"] = suite
        with (out / "pairs.jsonl").open("a", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps({"round": r, **p}, ensure_ascii=False) + "\n")
        state["rounds"].append(row)
        state["best_round"], refused = select_best(state, None if cfg.safety_suite is None else
                                                   cfg.safety_suite.margin)
        state["best_checkpoint"] = cfg.model if state["best_round"] == 0 else \
            state["rounds"][state["best_round"] - 1]["checkpoint"]
        _write_json(state_path, state)
        with (out / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
        echo(f"round {r}/{cfg.rounds}: {stats['pairs']} pairs, {stats['skipped']} skipped, mean reward "
             f"{stats['mean_reward']:.4f}, gap {stats['mean_gap']:.4f}, {train_stats['steps']} steps, dev reward "
             f"{'-' if dev_r is None else f'{dev_r:.4f}'}, samples {div['chars']:.0f} chars, distinct-2 "
             f"{div['distinct_2'] or 0:.2f}{_constraint_note(stats)}{flag_note(stats)}"
             f"{'' if suite is None else ', safety suite ' + _suite_note(suite)} ({row['seconds']:.1f} s)")
        if refused:
            echo(refused)
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
