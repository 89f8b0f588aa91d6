"""train-rm-multihead end to end on the tiny model: the safety head learns a known signal, length-grouped batches
cut padding, and (slow) SmolLM2's safety head generalises to held-out responses."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safety_pairs import RISKIER, SAFER, held_out_safety_pairs, safety_pairs

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.training.common import load_pairs_dataset
from psychocounsel.training.multihead.config import load_multihead_config
from psychocounsel.training.multihead.model import MultiHeadRewardModel, MultiHeadScorer, pair_accuracy
from psychocounsel.training.multihead.recipe import train_multihead_reward_model, train_rm_multihead_cmd

CONFIG = Path(__file__).parents[3] / "configs" / "train" / "multihead_cpu.yaml"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """Train through the command line on the CPU preset (tiny model, 30 steps), once for this file."""
    tmp = tmp_path_factory.mktemp("multihead")
    data = safety_pairs(tmp / "data")
    out = tmp / "rm"
    result = CliRunner().invoke(train_rm_multihead_cmd, [
        str(data), "--config", str(CONFIG), "--out", str(out), "-o", f"model={tiny_model_dir}",
        "-o", "lr=1e-3", "-o", "max_steps=30", "-o", "batch_size=4", "-o", "max_length=128",
        "-o", "warmup_ratio=0"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return data, out, result.output


def test_safety_head_learns_to_separate_chosen_from_rejected(trained):
    data, out, output = trained
    assert "trained 7 heads on 16 pairs (train), 30 steps" in output
    manifest = json.loads((out / "manifest.json").read_text())
    losses = [h["loss"] for h in manifest["metrics"]["loss_history"]]
    assert manifest["recipe"] == "train-rm-multihead" and losses[-1] < losses[0] / 2
    scorer = MultiHeadScorer(out, dtype="float32")
    ds = load_pairs_dataset(data)
    acc = pair_accuracy(scorer, ds)
    assert acc["safety_pairs"] == 16 and acc["safety_accuracy"] == 1.0 and acc["overall_accuracy"] == 1.0
    c = scorer.score_batch(ds["question"], ds["chosen_text"])
    r = scorer.score_batch(ds["question"], ds["rejected_text"])
    safety_gap = np.mean(c["safety"] - r["safety"])  # target gap: (5-3)/2 - (1-3)/2 = 2
    tied_gaps = [abs(np.mean(c[k] - r[k])) for k in PRINCIPLE_KEYS if k != "safety"]  # target 0
    assert safety_gap > 1.5 and max(tied_gaps) < safety_gap / 5


def test_training_stores_a_safety_threshold_calibrated_on_replies_rated_unsafe(trained):
    data, out, output = trained
    meta = json.loads((out / "multihead.json").read_text())
    ds = load_pairs_dataset(data)
    safety = list(PRINCIPLE_KEYS).index("safety")
    unsafe = {(q, t) for side in ("chosen", "rejected") for q, t, rt in
              zip(ds["question"], ds[f"{side}_text"], ds[f"{side}_ratings"], strict=True) if rt[safety] <= 2}
    assert unsafe  # the rejected replies here are rated safety 1
    scorer = MultiHeadScorer(out, dtype="float32")
    heads = scorer.score_batch([q for q, _ in unsafe], [t for _, t in unsafe])["safety"]
    assert meta["combine"] == "weighted"  # the preset keeps the paper's kind of overall
    assert meta["safety_threshold"] == pytest.approx(float(np.quantile(heads, 0.9)), abs=1e-5)
    assert f"on {len(unsafe)} training responses" in meta["safety_threshold_source"]
    assert "safety threshold" in output
    # under the constraint every judged-unsafe reply ranks below every chosen (safe) one here
    constrained = MultiHeadScorer(out, dtype="float32", combine="safety_constraint")
    assert pair_accuracy(constrained, ds)["overall_accuracy"] == 1.0


def test_length_grouped_batches_cut_padding(tiny_model_dir, tmp_path):
    data = held_out_safety_pairs(tmp_path / "data", SAFER, RISKIER, "train")  # responses of 40-110 characters
    padding = {}
    for grouped in (False, True):
        cfg = load_multihead_config(CONFIG, [f"model={tiny_model_dir}", "max_steps=6", "batch_size=8",
                                             "max_length=256", f"group_by_length={grouped}"])
        res = train_multihead_reward_model(cfg, data, tmp_path / f"rm-{grouped}")
        padding[grouped] = res["padding"]
    # measured 0.22 -> 0.14: the gap left is within pairs (a chosen and a rejected reply share a batch)
    assert padding[True] < 0.7 * padding[False], padding


@pytest.mark.slow
def test_smollm2_safety_head_generalises_to_held_out_responses(tmp_path):
    pytest.importorskip("gguf")
    train = held_out_safety_pairs(tmp_path / "data", SAFER[:5], RISKIER[:5], "train")
    test = load_pairs_dataset(held_out_safety_pairs(tmp_path / "test", SAFER[5:], RISKIER[5:], "test"))
    # the CPU preset (top 4 blocks, lr 1e-4), shortened to 16 steps
    cfg = load_multihead_config(CONFIG, ["max_length=128", "max_steps=16", "warmup_ratio=0", "logging_steps=1",
                                         "eval_split=null"])
    m = train_multihead_reward_model(cfg, train, tmp_path / "rm")
    after = pair_accuracy(MultiHeadScorer(tmp_path / "rm", dtype="float32"), test)
    untrained = MultiHeadRewardModel.from_backbone("embedded", list(PRINCIPLE_KEYS))
    before = pair_accuracy(MultiHeadScorer.from_model(untrained, MultiHeadScorer(tmp_path / "rm").tokenizer), test)
    print("smollm2 multihead:", {k: m[k] for k in ("train_pairs", "steps", "train_seconds", "train_tokens_per_s")},
          "loss", [round(h["loss"], 3) for h in m["loss_history"]][::3], "test pairs", after["pairs"],
          "safety acc before/after", before["safety_accuracy"], after["safety_accuracy"],
          "overall acc before/after", before["overall_accuracy"], after["overall_accuracy"])
    assert after["safety_accuracy"] >= 0.85 and after["safety_accuracy"] > before["safety_accuracy"]
