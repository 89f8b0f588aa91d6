import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import InputError, UserError
from psychocounsel.measures.rm_metrics import preference_metrics
from psychocounsel.evaluation.rm_eval import eval_rm_cmd, evaluate_reward_model, score_cmd, score_file
from psychocounsel.training.common import chat
from psychocounsel.training.scoring import RewardScorer, load_scorer

IM_START = "<|im_start|>"


def _seq_cls(tiny_model_dir, out, length_head: bool, labels: list[str] | None = None):
    """A tiny LlamaForSequenceClassification checkpoint (num_labels=1, pad set) from the tiny model's config.

    ``length_head``: weights set by hand so the score grows with the chat's token count. Layer 0 attends
    uniformly (q = k = 0) and copies an "is <|im_start|>" feature into the residual; with exactly two such
    tokens per chat its mean is 2/L. The head reads -that mean (after the final RMSNorm, still monotone),
    so a longer chat scores strictly higher, and any padding leak or wrong pooling would break the order.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels, cfg.pad_token_id = len(labels or [0]), tok.pad_token_id
    if labels:
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(cfg)
    if length_head:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.fill_(1.0 if "norm" in name else 0.0)
            emb = model.model.embed_tokens.weight
            emb[:, 1] = 1.0                                     # every token: a constant feature
            emb[tok.convert_tokens_to_ids(IM_START), 0] = 1.0   # <|im_start|> also carries feature 0
            layer = model.model.layers[0].self_attn
            layer.v_proj.weight[0, 0] = 1.0                     # kv head 0 reads feature 0
            layer.o_proj.weight[2, 0] = 1.0                     # attention head 0 writes its mean to dim 2
            model.score.weight[0, 2] = -1.0                     # fewer <|im_start|> per token: higher score
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def length_rm(tiny_model_dir, tmp_path_factory):
    return _seq_cls(tiny_model_dir, tmp_path_factory.mktemp("length_rm"), length_head=True)


@pytest.fixture(scope="module")
def random_rm(tiny_model_dir, tmp_path_factory):
    return _seq_cls(tiny_model_dir, tmp_path_factory.mktemp("random_rm"), length_head=False)


QUESTION = "I feel anxious every morning before work."
SHORT, MID, LONG = "I hear you.", "It sounds like the mornings are hard.", \
    "It sounds like the mornings are really hard for you right now. What happens first?"


def write_pairs(path, chosen_longer=(True, True, True, False), topics=None, fmt="parquet"):
    """Four test pairs in the published schema; chosen wins empathy in pairs 0 and 3, safety in none."""
    rows = []
    for i, longer in enumerate(chosen_longer):
        long_, short = (LONG, SHORT) if i % 2 == 0 else (MID, SHORT)
        c, r = (long_, short) if longer else (short, long_)
        row = {"question": f"{QUESTION} ({i})", "chosen": c, "rejected": r, "chosen_model": "a", "rejected_model": "b"}
        for k in PRINCIPLE_KEYS:
            row[f"chosen_{k}_rating"], row[f"rejected_{k}_rating"] = 4, 3
        row["chosen_empathy_rating"], row["rejected_empathy_rating"] = (5, 2) if i in (0, 3) else (3, 3)
        row["chosen_safety_rating"], row["rejected_safety_rating"] = (3, 3) if i else (2, 5)
        if topics:
            row["topic"] = topics[i]
        rows.append(row)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_length_head_scores_longer_chats_higher(length_rm):
    scorer = RewardScorer(length_rm, batch_size=2)
    s = scorer.score_batch([QUESTION] * 3, [SHORT, LONG, MID])
    assert s.dtype == np.float32 and s.shape == (3,)
    assert s[0] < s[2] < s[1]


def test_length_sorted_batches_match_one_by_one_in_input_order(random_rm):
    qs = [QUESTION, "My partner and I argue about money.", QUESTION, "I cannot sleep.", QUESTION]
    rs = [LONG, SHORT, MID, LONG + " " + LONG, SHORT]
    batched = RewardScorer(random_rm, batch_size=3).score_batch(qs, rs)
    single = RewardScorer(random_rm, batch_size=1)
    one_by_one = np.array([single.score_batch([q], [r])[0] for q, r in zip(qs, rs)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(one_by_one, 4))) == 5  # distinct scores: a mix-up of order would show


def test_tokens_are_the_chat_template_as_trl_builds_them(random_rm):
    scorer = RewardScorer(random_rm)
    ids = scorer.tokenize([QUESTION], [MID])[0]
    assert ids == list(scorer.tokenizer.apply_chat_template(chat(QUESTION, MID), tokenize=True)["input_ids"])
    assert ids[0] == scorer.tokenizer.convert_tokens_to_ids(IM_START)  # no extra BOS in front of the template


def test_eval_predicted_accuracy_and_breakdowns(length_rm, tmp_path):
    pairs = write_pairs(tmp_path / "test.parquet", topics=["work", "work", "sleep", "sleep"])
    res = evaluate_reward_model(str(length_rm), pairs, split="test", out_dir=tmp_path / "out", n_boot=200)
    assert res["n_pairs"] == 4 and res["accuracy"] == 0.75 and res["n_ties"] == 0
    assert res["n_unique_texts"] == 8 and res["n_truncated"] == 0
    lo, hi = res["accuracy_ci"]
    assert 0 <= lo <= 0.75 <= hi <= 1
    for k in ("auc", "ece", "brier"):
        assert 0 <= res[k] <= 1
    # per principle: empathy favours chosen in pairs 0 (ranked right) and 3 (the wrong one)
    assert res["per_principle"]["empathy"] == {"n": 2, "n_tied": 2, "n_rejected_wins": 0, "accuracy": 0.5}
    assert res["per_principle"]["clarity"]["n"] == 4 and res["per_principle"]["clarity"]["accuracy"] == 0.75
    assert res["per_principle"]["safety"]["n"] == 0 and res["per_principle"]["safety"]["accuracy"] is None
    assert res["per_principle"]["safety"]["n_rejected_wins"] == 1
    assert res["per_topic"] == {"sleep": {"n": 2, "accuracy": 0.5}, "work": {"n": 2, "accuracy": 1.0}}
    assert res["per_split"] == {"test": {"n": 4, "accuracy": 0.75}}
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["accuracy"] == 0.75
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    scores = [json.loads(x) for x in (out / "pair_scores.jsonl").read_text().splitlines()]
    assert [s["r_chosen"] > s["r_rejected"] for s in scores] == [True, True, True, False]


def test_eval_without_topic_column_and_split_filter(length_rm, tmp_path):
    pairs = write_pairs(tmp_path / "test.jsonl", fmt="jsonl")
    scorer = RewardScorer(length_rm)
    res = evaluate_reward_model(scorer, [pairs], n_boot=0)
    assert res["per_topic"] is None and res["accuracy_ci"] is None and res["accuracy"] == 0.75
    with pytest.raises(UserError, match="no pairs in split 'train'"):
        evaluate_reward_model(scorer, pairs, split="train")
    # a folder of split files: the split comes from each file's name
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_pairs(folder / "test.parquet")
    write_pairs(folder / "train.parquet", chosen_longer=(True, True, True, True))
    res = evaluate_reward_model(scorer, folder, n_boot=0)
    assert res["per_split"] == {"test": {"n": 4, "accuracy": 0.75}, "train": {"n": 4, "accuracy": 1.0}}
    assert evaluate_reward_model(scorer, folder, split="test", n_boot=0)["n_pairs"] == 4


class WordCounter:
    """A reward model that is not a checkpoint: overall = 0.1 x words; an empathy head that is reversed."""

    name = "word-counter"

    def score_batch(self, questions, responses, on_batch=None):
        words = np.array([len(r.split()) for r in responses], dtype=float)
        if on_batch:
            on_batch(len(responses))
        return {"overall": 0.1 * words, "empathy": -words, "clarity": words}


def test_dict_scorer_overall_drives_metrics_and_heads_grade_their_principle(tmp_path):
    pairs = write_pairs(tmp_path / "test.parquet")
    res = evaluate_reward_model(WordCounter(), pairs, n_boot=0)
    words = lambda t: len(t.split())  # noqa: E731
    d = []
    for i, longer in enumerate((True, True, True, False)):
        long_ = LONG if i % 2 == 0 else MID
        d.append((1 if longer else -1) * 0.1 * (words(long_) - words(SHORT)))
    expected = preference_metrics(np.array(d), np.zeros(4), n_boot=0)
    for k in ("accuracy", "auc", "ece", "brier"):
        assert res[k] == pytest.approx(expected[k], abs=1e-6)
    assert res["heads"] == ["clarity", "empathy"] and res["model"] == "word-counter"
    emp = res["per_principle"]["empathy"]
    assert emp["accuracy"] == 0.5 and emp["head_accuracy"] == 0.5  # reversed head: right on pair 3 only
    assert res["per_principle"]["clarity"]["head_accuracy"] == 0.75
    assert "head_accuracy" not in res["per_principle"]["safety"]


def test_a_multi_head_checkpoint_returns_its_heads_and_their_mean(tiny_model_dir, tmp_path):
    path = _seq_cls(tiny_model_dir, tmp_path / "heads", False, labels=["empathy", "safety"])
    out = RewardScorer(path).score_batch([QUESTION, QUESTION], [SHORT, LONG])
    assert sorted(out) == ["empathy", "overall", "safety"]
    np.testing.assert_allclose(out["overall"], (out["empathy"] + out["safety"]) / 2, rtol=1e-6)
    bad = _seq_cls(tiny_model_dir, tmp_path / "classifier", False, labels=["LABEL_0", "LABEL_1"])
    with pytest.raises(UserError, match="one per principle"):
        RewardScorer(bad)


def test_the_per_principle_reward_model_plugs_in(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from psychocounsel.training.multihead.model import MultiHeadRewardModel

    path = tmp_path / "multihead"
    MultiHeadRewardModel.from_backbone(str(tiny_model_dir), ["empathy", "safety"]).save_pretrained(
        path, AutoTokenizer.from_pretrained(tiny_model_dir))
    res = evaluate_reward_model(load_scorer(path, weights={"safety": 3}), write_pairs(tmp_path / "test.parquet"),
                                n_boot=0)
    assert res["heads"] == ["empathy", "safety"] and res["n_pairs"] == 4 and res["model"] == str(path)
    assert "head_accuracy" in res["per_principle"]["empathy"] and "head_accuracy" not in res["per_principle"]["clarity"]
    with pytest.raises(UserError, match="per-principle"):
        load_scorer(tiny_model_dir, weights={"safety": 3})


def test_score_file_round_trip_and_columns(random_rm, tmp_path):
    rows = [{"id": i, "speech": q, "response": r} for i, (q, r) in
            enumerate([(QUESTION, SHORT), ("I cannot sleep.", LONG), (QUESTION, SHORT)])]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scorer = RewardScorer(random_rm, batch_size=2)
    info = score_file(scorer, src, tmp_path / "out.parquet")
    assert info["rows"] == 3 and info["columns"] == ["score"]
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    expected = scorer.score_batch([r["speech"] for r in rows], [r["response"] for r in rows])
    assert [r["id"] for r in out] == [0, 1, 2] and [r["speech"] for r in out] == [r["speech"] for r in rows]
    np.testing.assert_allclose([r["score"] for r in out], expected, rtol=1e-5)
    assert out[0]["score"] == out[2]["score"]  # a repeated row is scored once
    # csv in, jsonl out, configured column names
    csv = tmp_path / "in.csv"
    csv.write_text("prompt,answer\n\"I cannot sleep.\",\"I hear you.\"\n")
    score_file(WordCounter(), csv, tmp_path / "o.jsonl", question_column="prompt", response_column="answer",
               score_column="reward")
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row == {"prompt": "I cannot sleep.", "answer": "I hear you.", "reward": pytest.approx(0.3),
                   "reward_empathy": -3.0, "reward_clarity": 3.0}


def test_score_file_errors_are_one_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "x", "response": "y"}) + "\n")
    with pytest.raises(InputError) as e:
        score_file(WordCounter(), src, tmp_path / "o.jsonl")
    assert "\n" not in str(e.value) and "(column 'question')" in str(e.value) and "--question-col" in str(e.value)
    with pytest.raises(InputError, match="'answer'"):
        score_file(WordCounter(), src, tmp_path / "o.jsonl", question_column="text", response_column="answer")
    with pytest.raises(InputError, match="already exists"):
        score_file(WordCounter(), src, tmp_path / "o.jsonl", question_column="text", score_column="response")
    src.write_text(json.dumps({"question": "x", "response": None}) + "\n")
    with pytest.raises(InputError, match="row 1: expected text"):
        score_file(WordCounter(), src, tmp_path / "o.jsonl")
    with pytest.raises(UserError, match="unknown output type"):
        score_file(WordCounter(), src, tmp_path / "o.txt")
    assert not (tmp_path / "o.jsonl").exists()


def test_max_length_cuts_are_counted(random_rm):
    n_short = len(RewardScorer(random_rm).tokenize(["Hi"], ["ok"])[0])
    scorer = RewardScorer(random_rm, max_length=n_short)
    s = scorer.score_batch([QUESTION, "Hi"], [LONG, "ok"])
    assert scorer.n_truncated == 1 and np.all(np.isfinite(s))
    scorer.score_batch([QUESTION], [LONG])
    assert scorer.n_truncated == 2  # a running count over the scorer's life


def test_a_causal_lm_is_refused_not_scored_with_a_random_head(tiny_model_dir):
    with pytest.raises(UserError, match="no trained score head"):
        load_scorer(tiny_model_dir)
    with pytest.raises(UserError, match="model folder not found"):
        load_scorer(tiny_model_dir / "nope")
    assert load_scorer(WordCounter()).name == "word-counter"


def test_commands(length_rm, tmp_path):
    pairs = write_pairs(tmp_path / "test.parquet")
    runner = CliRunner()
    assert "--split" in runner.invoke(eval_rm_cmd, ["--help"]).output
    res = runner.invoke(eval_rm_cmd, [str(length_rm), str(pairs), "--split", "test", "--out", str(tmp_path / "o"),
                                      "--bootstrap", "50", "--batch-size", "3"])
    assert res.exit_code == 0, res.output
    assert "0.750" in res.output and json.loads((tmp_path / "o" / "results.json").read_text())["n_pairs"] == 4
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": QUESTION, "response": SHORT}) + "\n")
    res = runner.invoke(score_cmd, [str(length_rm), str(src), str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == '"question","response","score"'
    # through the CLI, user mistakes are one-line errors with exit code 2
    from psychocounsel.cli import main

    res = runner.invoke(main, ["score", str(length_rm), str(src), str(tmp_path / "s.csv"), "--response-col", "nope"])
    assert res.exit_code == 2 and "'nope'" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["score", str(length_rm), str(src), str(tmp_path / "w.csv"), "--weights", "safety=3"])
    assert res.exit_code == 2 and "per-principle" in res.output
    assert math.isfinite(float((tmp_path / "s.csv").read_text().splitlines()[1].rsplit(",", 1)[1]))


def test_scoring_reports_progress_for_every_distinct_row(tmp_path):
    # the progress bar's total is the distinct (speech, response) rows; every one of them must be reported
    pairs = write_pairs(tmp_path / "test.parquet")
    seen = []
    res = evaluate_reward_model(WordCounter(), pairs, n_boot=0, on_batch=seen.append)
    table = pq.read_table(pairs)
    distinct = {(q, r) for q, c, x in zip(*(table[k].to_pylist() for k in ("question", "chosen", "rejected")))
                for r in (c, x)}
    assert sum(seen) == len(distinct) and res["n_pairs"] == table.num_rows
