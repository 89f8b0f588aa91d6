"""Per-principle reward model: loss by hand, learning a known signal, save/load, user weights."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.common import load_pairs_dataset
from psychocounsel.training.multihead import (
    load_multihead_config,
    train_rm_multihead_cmd,
)
from psychocounsel.training.multihead_data import tokenize_pairs
from psychocounsel.training.multihead_model import (
    MultiHeadScorer,
    multihead_loss,
    pair_accuracy,
    parse_weights,
    resolve_weights,
)

CONFIG = Path(__file__).parents[2] / "configs" / "train" / "multihead_cpu.yaml"
QUESTIONS = ["I feel anxious every morning before work.", "My partner and I argue about money.",
             "I cannot sleep and I worry about my exams.", "I feel unheard when we talk."]
SAFE = ["If you ever feel unsafe, please reach out to someone you trust.",
        "Your safety matters; a crisis line is there any time."]
UNSAFE = ["Just ignore it and push through.", "Do whatever you want, it does not matter."]


def safety_pairs(path: Path, n: int = 16) -> Path:
    """Pairs in the published schema where the chosen response wins on safety (5 vs 1) and ties (3 vs 3)
    on every other principle."""
    cols = {"question": [QUESTIONS[i % 4] for i in range(n)], "chosen": [SAFE[i % 2] for i in range(n)],
            "rejected": [UNSAFE[(i // 4) % 2] for i in range(n)], "chosen_model": ["a"] * n,
            "rejected_model": ["b"] * n}
    for k in PRINCIPLE_KEYS:
        cols[f"chosen_{k}_rating"] = [5 if k == "safety" else 3] * n
        cols[f"rejected_{k}_rating"] = [1 if k == "safety" else 3] * n
    path.mkdir(parents=True, exist_ok=True)
    f = path / "train.parquet"
    pq.write_table(pa.table(cols), f)
    return f


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


def test_loss_matches_hand_computed_values():
    # K=2 heads, weights {a: 1, b: 3} -> normalised (0.25, 0.75); lambda 0.5; two pairs.
    w = torch.tensor(resolve_weights(["a", "b"], {"a": 1, "b": 3}), dtype=torch.float32)
    assert w.tolist() == [0.25, 0.75]
    hc = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    hr = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    tc = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tr = torch.tensor([[0.0, 1.0], [1.0, float("nan")]])  # a missing rating adds nothing
    loss, parts = multihead_loss(hc, hr, tc, tr, w, reg_weight=0.5)
    # margins: pair 1: 0.25*1 + 0.75*0 = 0.25; pair 2: 0.25*(-1) + 0.75*1 = 0.5
    bt = (math.log1p(math.exp(-0.25)) + math.log1p(math.exp(-0.5))) / 2
    # squared errors summed over heads, per response: c1 0, c2 1 (2 vs 1), r1 1 (0 vs 1), r2 0 (b missing)
    reg = (0 + 1 + 1 + 0) / 4
    assert parts["bt"].item() == pytest.approx(bt, abs=1e-6) and parts["reg"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(bt + 0.5 * reg, abs=1e-6) and parts["accuracy"].item() == 1.0
    # worked on paper: (log(1 + e^-0.25) + log(1 + e^-0.5)) / 2 = (0.575939 + 0.474077) / 2 = 0.525008, + 0.5 * 0.5
    assert loss.item() == pytest.approx(0.775008, abs=1e-5)


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


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    from psychocounsel.training.multihead import MultiHeadRewardModel

    _, out, _ = trained
    model = MultiHeadRewardModel.from_pretrained(out)
    model.save_pretrained(tmp_path / "again", MultiHeadScorer(out, dtype="float32").tokenizer)
    a, b = MultiHeadScorer(out, dtype="float32"), MultiHeadScorer(tmp_path / "again", dtype="float32")
    qs, rs = QUESTIONS + QUESTIONS[:1], SAFE + UNSAFE + ["ok"]
    sa, sb = a.score_batch(qs, rs), b.score_batch(qs, rs)
    assert list(sa) == [*PRINCIPLE_KEYS, "overall"]
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    # length-sorted, padded batches score each chat as it scores alone
    one = [a.score_batch([q], [r])["overall"][0] for q, r in zip(qs, rs)]
    np.testing.assert_allclose(one, sa["overall"], atol=1e-5)
    meta = json.loads((out / "multihead.json").read_text())
    assert meta["principles"] == list(PRINCIPLE_KEYS) and meta["pooling"] == "last"


def test_weights_change_overall_linearly(trained):
    _, out, _ = trained
    qs, rs = QUESTIONS, SAFE + UNSAFE
    base = MultiHeadScorer(out, dtype="float32")
    s = base.score_batch(qs, rs)
    heads = np.stack([s[k] for k in PRINCIPLE_KEYS], axis=1)
    np.testing.assert_allclose(s["overall"], heads.mean(axis=1))  # default: equal, the paper's overall
    only_safety = MultiHeadScorer(out, {k: 0 for k in PRINCIPLE_KEYS} | {"safety": 1}, dtype="float32")
    np.testing.assert_allclose(only_safety.score_batch(qs, rs)["overall"], s["safety"])
    up = MultiHeadScorer(out, {"safety": 3}, dtype="float32").score_batch(qs, rs)["overall"]
    np.testing.assert_allclose(up, (heads.sum(axis=1) + 2 * s["safety"]) / 9)  # safety 3, six others 1
    np.testing.assert_allclose(base.overall(s, {"safety": 3}), up)  # re-weighting needs no model call


@pytest.mark.parametrize("weights, message", [
    ({"saftey": 2}, "unknown principle 'saftey'"),
    ({"safety": -1}, "'safety' must be a finite number >= 0"),
    ({"safety": float("nan")}, "must be a finite number"),
    ({k: 0 for k in PRINCIPLE_KEYS}, "at least one principle"),
    ({"safety": "high"}, "must be a number"),
])
def test_bad_weights_are_one_line_errors(weights, message):
    with pytest.raises(UserError, match=message) as e:
        resolve_weights(PRINCIPLE_KEYS, weights)
    assert "\n" not in str(e.value)


def test_parse_weights_and_config_errors(tmp_path):
    assert parse_weights("safety=3, empathy=0.5") == {"safety": 3.0, "empathy": 0.5}
    with pytest.raises(UserError, match="key=number"):
        parse_weights("safety")
    cfg = load_multihead_config(CONFIG, ["weights.safety=3", "model=x"])
    assert cfg.weights == {"safety": 3} and cfg.model == "x" and cfg.train_layers == 4
    with pytest.raises(UserError, match="lamda"):
        load_multihead_config(CONFIG, ["lamda=2"])
    with pytest.raises(UserError, match="model: Field required"):
        load_multihead_config(None, [])


def test_overlong_pairs_are_counted_and_handled(tiny_model_dir, tmp_path):
    from psychocounsel.training.multihead_data import encode_chats, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    ds = load_pairs_dataset(safety_pairs(tmp_path))
    lengths = [len(x) for x in encode_chats(tok, ds["question"], ds["chosen_text"])]
    cut = sorted(lengths)[len(lengths) // 2]  # about half the pairs have a side longer than this
    base = load_multihead_config(None, ["model=x", f"max_length={cut}"])
    kept, n_over = tokenize_pairs(ds, tok, base)
    assert n_over > 0 and len(kept) == len(ds) - n_over
    assert kept[0]["chosen_targets"][PRINCIPLE_KEYS.index("safety")] == 1.0  # (5 - 3) / 2
    cut_ds, n = tokenize_pairs(ds, tok, base.model_copy(update={"overlong": "truncate"}))
    assert n == n_over and len(cut_ds) == len(ds) and max(map(len, cut_ds["chosen_input_ids"])) <= cut
    with pytest.raises(UserError, match="over max_length"):
        tokenize_pairs(ds, tok, base.model_copy(update={"overlong": "error"}))


def test_length_grouped_batches_cut_padding(tiny_model_dir, tmp_path):
    from psychocounsel.training.multihead import train_multihead_reward_model

    data = _safety_pairs(tmp_path / "data", SAFER, RISKIER, "train")  # responses of 40-110 characters
    padding = {}
    for grouped in (False, True):
        cfg = load_multihead_config(CONFIG, [f"model={tiny_model_dir}", "max_steps=6", "batch_size=8",
                                             "max_length=256", f"group_by_length={grouped}"])
        res = train_multihead_reward_model(cfg, data, tmp_path / f"rm-{grouped}")
        padding[grouped] = res["padding"]
    # measured 0.22 -> 0.14: the gap left is within pairs (a chosen and a rejected reply share a batch)
    assert padding[True] < 0.7 * padding[False], padding


# Held-out check on a real pretrained model: the chosen response is always the safer one (safety 5 vs 1, ties
# elsewhere); the test pairs use responses never seen in training.
SPEECHES = ["I have been feeling hopeless for weeks and sometimes I think everyone would be better off without me.",
            "My boyfriend yells at me and last night he shoved me against the wall.",
            "I stopped eating much because I want to feel in control of something.",
            "I keep drinking alone every night to get to sleep.",
            "My exams are next week and I am panicking so much I cannot breathe.",
            "I feel numb since my father died and I do not see the point of anything.",
            "Sometimes I cut myself when the pressure gets too much.",
            "I lost my job and I have been thinking about ending it all."]
SAFER = ["That sounds very painful. If you are thinking about harming yourself, please call a crisis line now.",
         "Your safety matters most. Is there someone you trust to reach tonight? A crisis hotline is open any time.",
         "I am worried about your safety. Please talk to a doctor or a crisis counselor soon; you are not alone.",
         "Thank you for telling me. If you are in danger right now, please contact emergency services.",
         "It takes courage to share this. Let us make a safety plan together and find support you can call.",
         "I hear how much you are hurting. Please reach out to a crisis line; they can help you stay safe.",
         "What you describe worries me. Could you see a doctor this week and keep a helpline number with you?",
         "You deserve to be safe. If things feel unbearable tonight, please call emergency services or a friend."]
RISKIER = ["Everyone feels like that sometimes, just get over it.",
           "Honestly, a few more drinks will help you relax.",
           "You are overreacting, it is not a big deal.",
           "Just ignore it and maybe it will go away on its own.",
           "Skipping meals is fine if it makes you feel better.",
           "Nobody can help you with that, you have to deal with it yourself.",
           "Stop being dramatic and toughen up.",
           "Whatever you decide is fine, it really does not matter."]


def _safety_pairs(path: Path, safer, riskier, name: str) -> Path:
    rows = [(q, s, r) for i, q in enumerate(SPEECHES) for j, (s, r) in
            enumerate((s, r) for s in safer for r in riskier) if (i + j) % 3 == 0]
    n = len(rows)
    cols = {"question": [q for q, _, _ in rows], "chosen": [s for _, s, _ in rows], "rejected": [r for _, _, r in rows],
            "chosen_model": ["a"] * n, "rejected_model": ["b"] * n}
    for k in PRINCIPLE_KEYS:
        cols[f"chosen_{k}_rating"] = [5 if k == "safety" else 3] * n
        cols[f"rejected_{k}_rating"] = [1 if k == "safety" else 3] * n
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path / f"{name}.parquet")
    return path / f"{name}.parquet"


@pytest.mark.slow
def test_smollm2_safety_head_generalises_to_held_out_responses(tmp_path):
    pytest.importorskip("gguf")
    from psychocounsel.training.multihead import (
        MultiHeadRewardModel,
        train_multihead_reward_model,
    )

    train = _safety_pairs(tmp_path / "data", SAFER[:5], RISKIER[:5], "train")
    test = load_pairs_dataset(_safety_pairs(tmp_path / "test", SAFER[5:], RISKIER[5:], "test"))
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
