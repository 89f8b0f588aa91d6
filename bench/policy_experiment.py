"""Does preference learning raise the reward? Offline DPO vs online iterative DPO from SmolLM2-135M (the paper's
Figure 4, at CPU scale), scored by the known-signal reward model.

    python bench/known_signal.py                 # first: pairs + the per-principle reward model
    python bench/policy_experiment.py            # then: base, offline DPO, online DPO, greedy on held-out speeches

Both policies update the same top blocks with the same beta, learning rate and batch size, and see about the
same number of preference pairs: offline DPO one epoch over the fixed known-signal pairs, online DPO rounds of
best-vs-worst pairs chosen by the reward model among the policy's own samples. Every policy then answers the 40
held-out test speeches greedily; the reward model scores the replies. Reported: mean reward with a bootstrap 95%
CI over speeches, the win rate against the base policy's reply to the same speech, and reply length (a reward
that rises with length alone would be a hack, not learning).

Outputs under bench/out/policy_experiment/ (git-ignored): pairs/, dpo/, online/, replies.jsonl, results.json,
figure.png. Every stage resumes: a rerun skips finished policies and scored replies.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = ("base", "offline_dpo", "online_dpo")


def make_splits(src: Path, dst: Path, n_dev: int, seed: int) -> dict[str, int]:
    """train/dev/test pair files: dev = ``n_dev`` train speeches set aside for online DPO's checkpoint choice
    and offline DPO's eval loss; test = the reward model's held-out speeches, untouched."""
    import pandas as pd

    dst.mkdir(parents=True, exist_ok=True)
    train = pd.read_parquet(src / "train.parquet")
    test = pd.read_parquet(src / "test.parquet")
    questions = sorted(set(train["question"]))
    dev_q = set(random.Random(seed).sample(questions, n_dev))
    parts = {"train": train[~train["question"].isin(dev_q)], "dev": train[train["question"].isin(dev_q)],
             "test": test}
    for name, df in parts.items():
        df = df.assign(split=name)  # the split column, not the file name, is what the readers go by
        df.to_parquet(dst / f"{name}.parquet", index=False)
    return {name: len(df) for name, df in parts.items()}


def greedy_replies(policy: str, questions: list[str], max_tokens: int) -> list[str]:
    from psychocounsel.backends.local import LocalBackend
    from psychocounsel.config import LocalBackendConfig
    from psychocounsel.training.online_dpo.sampling import generate

    backend = LocalBackend(LocalBackendConfig(device="cpu", batch_size=16))
    return [r[0] for r in generate(backend, policy, questions, 1, temperature=0.0, top_p=1.0,
                                   max_tokens=max_tokens, seed=0)]


def speech_overlap(speech: str, reply: str) -> float:
    """Share of the reply's words of 4+ letters that the client used: the known signal rewards reflecting the
    client's own words, which a generic template ("It sounds like you're dealing with something") does not."""
    import re

    said = set(re.findall(r"[a-z']{4,}", speech.lower()))
    words = re.findall(r"[a-z']{4,}", reply.lower())
    return sum(w in said for w in words) / len(words) if words else 0.0


def summarise(rewards: dict[str, np.ndarray], lengths: dict[str, np.ndarray], n_boot: int,
              replies: dict[str, tuple[list[str], list[str]]] | None = None) -> dict:
    from psychocounsel.measures.bootstrap import bootstrap_ci
    from psychocounsel.training.online_dpo.sampling import diversity

    base = rewards["base"]
    out = {}
    for name, r in rewards.items():
        row = {"mean_reward": float(r.mean()), "mean_reward_ci": bootstrap_ci(np.mean, r, n_boot=n_boot),
               "mean_chars": float(lengths[name].mean())}
        if name != "base":
            wins = (r > base).astype(float) + 0.5 * (r == base)
            row["win_rate_vs_base"] = float(wins.mean())
            row["win_rate_vs_base_ci"] = bootstrap_ci(np.mean, wins, n_boot=n_boot)
            row["reward_gain"] = float((r - base).mean())
            row["reward_gain_ci"] = bootstrap_ci(np.mean, r - base, n_boot=n_boot)
        if replies and name in replies:  # is a higher reward a better reply, or a template the RM over-rewards?
            qs, texts = replies[name]
            d = diversity(texts)
            row.update({"distinct_2": d["distinct_2"], "top_opening_share": d["top_opening_share"],
                        "distinct_replies": len(set(texts)),
                        "speech_overlap": float(np.mean([speech_overlap(q, t) for q, t in zip(qs, texts)]))})
        out[name] = row
    return out


def plot(results: dict, online_rounds: list[dict], path: Path) -> None:
    """Held-out reward per policy; online DPO per round (dev reward, and test reward where every round was
    scored); what each policy's test replies look like (reflecting the client's words, one template, variety)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    pol = results["policies"]
    names = [n for n in pol if not n.startswith("online_round_")]
    means = [pol[n]["mean_reward"] for n in names]
    cis = [pol[n]["mean_reward_ci"] for n in names]
    err = np.array([[m - lo for m, (lo, _) in zip(means, cis)], [hi - m for m, (_, hi) in zip(means, cis)]])
    colors = {"base": "#9e9e9e", "offline_dpo": "#4c72b0", "online_dpo": "#dd8452", "online_dpo_last": "#e8a87c",
              "offline_dpo_sft": "#55a868"}
    a.bar(names, means, yerr=err, capsize=6, color=[colors.get(n, "#8172b2") for n in names])
    a.tick_params(axis="x", labelsize=7, rotation=15)
    a.set_ylabel("reward on 40 held-out speeches (greedy)")
    a.set_title("Held-out reward by policy (95% CI)")
    xs = [0] + [r["round"] for r in online_rounds]
    b.plot(xs, [results["online_initial_dev_reward"]] + [r["dev_reward"] for r in online_rounds], marker="o",
           color="#dd8452", label="online DPO, dev (12 speeches)")
    ckpt = results.get("policy_checkpoints", {})
    by_ckpt = {v: pol[k]["mean_reward"] for k, v in ckpt.items() if k in pol}
    test = [(r["round"], by_ckpt[r["checkpoint"]]) for r in online_rounds if r["checkpoint"] in by_ckpt]
    if test:
        b.plot([0] + [x for x, _ in test], [pol["base"]["mean_reward"]] + [y for _, y in test], marker="s",
               color="#c44e52", ls=":", label="online DPO, test (40 speeches)")
    for name, value in (results.get("offline_dev_reward") or {}).items():
        b.axhline(value, color=colors.get(name, "#8172b2"), ls="--", label=f"{name} (dev)")
    b.set_xlabel("round")
    b.set_ylabel("reward (greedy replies)")
    b.legend(fontsize=7)
    keys = [("speech_overlap", "reply words the client used"), ("top_opening_share", "replies opening alike"),
            ("distinct_2", "distinct-2")]
    width = 0.8 / len(keys)
    for j, (key, label) in enumerate(keys):
        c.bar(np.arange(len(names)) + (j - 1) * width, [pol[n].get(key) or 0 for n in names], width, label=label)
    c.set_xticks(np.arange(len(names)), names, fontsize=7, rotation=15)
    c.set_ylim(0, 1.05)
    c.legend(fontsize=7)
    c.set_title("What the reward bought: the same test replies")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@click.command()
@click.option("--out", "out_dir", default=str(ROOT / "bench" / "out" / "policy_experiment"), show_default=True)
@click.option("--rm", "rm_dir", default=str(ROOT / "bench" / "out" / "known_signal" / "rm"), show_default=True)
@click.option("--pairs", "pairs_src", default=str(ROOT / "bench" / "out" / "known_signal" / "pairs"),
              show_default=True)
@click.option("--train-layers", default=4, show_default=True, help="Top blocks updated by both recipes.")
@click.option("--lr", default=2e-5, show_default=True, help="Both recipes (a 135M model barely moves at 5e-7).")
@click.option("--sft-weight", default=0.0, show_default=True,
              help="Also train offline DPO + this x chosen NLL (RPO) as a fourth policy, offline_dpo_sft.")
@click.option("--sft-epochs", default=1.0, show_default=True, help="Epochs of the offline DPO + SFT policy.")
@click.option("--sft-lr", type=float, default=None, help="Learning rate of the offline DPO + SFT policy; default: --lr.")
@click.option("--online-lr", type=float, default=None, help="Online DPO's learning rate; default: --lr.")
@click.option("--online-epochs", default=1.0, show_default=True, help="Passes over each online round's pairs.")
@click.option("--online-sft-weight", default=0.0, show_default=True,
              help="Online DPO + this x chosen NLL (iterative RPO); 0 = plain online DPO.")
@click.option("--online-reference", type=click.Choice(["previous", "initial"]), default="previous", show_default=True,
              help="Online DPO's reference: the policy entering each round (the paper) or the initial policy.")
@click.option("--every-round", is_flag=True, help="Keep every online round and score each on the test speeches.")
@click.option("--rounds", default=4, show_default=True)
@click.option("--speeches-per-round", default=32, show_default=True)
@click.option("--samples", default=4, show_default=True, help="Samples per speech in online DPO (paper: 8).")
@click.option("--max-tokens", default=96, show_default=True)
@click.option("--n-dev", default=12, show_default=True)
@click.option("--n-boot", default=2000, show_default=True)
@click.option("--seed", default=0, show_default=True)
def main(out_dir: str, rm_dir: str, pairs_src: str, train_layers: int, lr: float, sft_weight: float,
         sft_epochs: float, sft_lr: float | None, online_lr: float | None,
         online_epochs: float, online_sft_weight: float, online_reference: str, every_round: bool, rounds: int,
         speeches_per_round: int, samples: int, max_tokens: int, n_dev: int, n_boot: int, seed: int) -> None:
    from psychocounsel.training.dpo.config import DPOTrainConfig
    from psychocounsel.training.dpo.recipe import train_dpo
    from psychocounsel.training.online_dpo.config import OnlineDPOConfig
    from psychocounsel.training.online_dpo.recipe import train_online_dpo
    from psychocounsel.training.online_dpo.sampling import score
    from psychocounsel.training.scoring import load_scorer

    out = Path(out_dir)
    pairs = out / "pairs"
    if not Path(rm_dir, "manifest.json").is_file():
        raise SystemExit(f"{rm_dir}: no reward model; run bench/known_signal.py first")
    counts = make_splits(Path(pairs_src), pairs, n_dev, seed)
    click.echo(f"pairs: {counts}")
    timings: dict[str, float] = {}
    common = dict(model="embedded", beta=0.1, learning_rate=lr, batch_size=8, per_device_batch_size=4,
                  max_length=384, precision="fp32", device="cpu", train_layers=train_layers, seed=seed)

    dpo_dir = out / "dpo"
    if not (dpo_dir / "manifest.json").is_file():
        t0 = time.time()
        cfg = DPOTrainConfig(pairs=[str(pairs)], out=str(dpo_dir), split="train", eval_split="dev", epochs=1,
                             warmup=0.1, lr_scheduler="linear", logging_steps=2, save_steps=10, **common)
        res = train_dpo(cfg)
        timings["offline_dpo_train_s"] = round(time.time() - t0, 1)
        click.echo(f"offline DPO: {json.dumps(res.get('metrics', {}), default=str)[:400]}")

    sft_dir = out / f"dpo-sft{sft_weight:g}" if (sft_epochs, sft_lr) == (1.0, None) else \
        out / f"dpo-sft{sft_weight:g}-lr{sft_lr or lr:g}-ep{sft_epochs:g}"
    if sft_weight and not (sft_dir / "manifest.json").is_file():
        t0 = time.time()
        cfg = DPOTrainConfig(pairs=[str(pairs)], out=str(sft_dir), split="train", eval_split="dev",
                             epochs=sft_epochs, warmup=0.1, lr_scheduler="linear", logging_steps=2, save_steps=10,
                             sft_weight=sft_weight, **{**common, "learning_rate": sft_lr or lr})
        res = train_dpo(cfg)
        timings["offline_dpo_sft_train_s"] = round(time.time() - t0, 1)
        click.echo(f"offline DPO + SFT: {json.dumps(res.get('metrics', {}), default=str)[:400]}")

    online_dir = out / "online"
    t0 = time.time()
    ocfg = OnlineDPOConfig(out=str(online_dir), reward_model=rm_dir, pairs=[str(pairs)], rounds=rounds,
                           speeches_per_round=speeches_per_round, samples_per_speech=samples, temperature=0.8,
                           max_tokens=max_tokens, dev_speeches=n_dev, generation_batch_size=16,
                           lr_scheduler="constant", reference=online_reference, epochs_per_round=online_epochs,
                           keep_all_rounds=every_round,
                           sft_weight=online_sft_weight,
                           **{**common, "learning_rate": online_lr or lr})
    state = train_online_dpo(ocfg, echo=click.echo)
    timings["online_dpo_s"] = round(time.time() - t0, 1)

    import pandas as pd

    test_q = sorted(set(pd.read_parquet(pairs / "test.parquet")["question"]))
    dev_q = sorted(set(pd.read_parquet(pairs / "dev.parquet")["question"]))
    scorer = load_scorer(rm_dir, device="cpu")
    policies = {"base": "embedded", "offline_dpo": str(dpo_dir), "online_dpo": state["best_checkpoint"]}
    last = state["rounds"][-1]["checkpoint"] if state["rounds"] else "embedded"
    if last != policies["online_dpo"]:  # the last round too: checkpoint choice on a small dev set is noisy
        policies["online_dpo_last"] = last
    if every_round:
        for row in state["rounds"]:
            if row["checkpoint"] not in policies.values():
                policies[f"online_round_{row['round']}"] = row["checkpoint"]
    if sft_weight:
        policies["offline_dpo_sft"] = str(sft_dir)
    cache = out / "replies.jsonl"
    have = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            have[(row["policy"], row["checkpoint"], row["split"])] = row
    rewards, lengths, texts = {}, {}, {}
    offline_dev: dict[str, float] = {}
    for name, ckpt in policies.items():
        for split, qs in (("test", test_q), ("dev", dev_q)):
            if split == "dev" and not name.startswith("offline"):
                continue
            key = (name, ckpt, split)
            if key not in have:
                t0 = time.time()
                replies = greedy_replies(ckpt, qs, max_tokens)
                r = score(scorer, qs, [[x] for x in replies])
                have[key] = {"policy": name, "checkpoint": ckpt, "split": split, "questions": qs,
                             "replies": replies, "rewards": [float(x[0]) for x in r],
                             "seconds": round(time.time() - t0, 1)}
                with cache.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(have[key], ensure_ascii=False) + "\n")
            row = have[key]
            if split == "test":
                rewards[name] = np.array(row["rewards"])
                lengths[name] = np.array([len(x) for x in row["replies"]], dtype=float)
                texts[name] = (row["questions"], row["replies"])
                click.echo(f"{name}: mean test reward {rewards[name].mean():.3f} ({row['seconds']} s)")
            else:
                offline_dev[name] = float(np.mean(row["rewards"]))

    results = {"policies": summarise(rewards, lengths, n_boot, texts), "n_test_speeches": len(test_q),
               "online_initial_dev_reward": state["initial_dev_reward"], "offline_dev_reward": offline_dev,  # per offline policy
               "online_best_round": state["best_round"], "online_rounds": state["rounds"],
               "policy_checkpoints": policies,
               "config": {"train_layers": train_layers, "lr": lr, "sft_weight": sft_weight, "sft_epochs": sft_epochs,
                          "sft_lr": sft_lr or lr, "online_lr": online_lr or lr, "online_epochs": online_epochs,
                          "online_sft_weight": online_sft_weight, "online_reference": online_reference,
                          "rounds": rounds,
                          "speeches_per_round": speeches_per_round, "samples": samples, "max_tokens": max_tokens,
                          "pairs": counts, "seed": seed},
               "timings": timings,
               "examples": [{"speech": test_q[i], **{n: have[(n, policies[n], "test")]["replies"][i]
                                                      for n in policies if not n.startswith("online_round_")}}
                            for i in range(3)]}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, state["rounds"], out / "figure.png")
    click.echo(json.dumps(results["policies"], indent=1))
    click.echo(f"results.json and figure.png in {out}")


if __name__ == "__main__":
    main()
