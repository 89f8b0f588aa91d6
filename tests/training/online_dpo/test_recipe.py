"""Online iterative DPO on the tiny random Llama: two rounds end to end through the local backend, resume after a
cut-off run, a real sequence-classification reward model through the command, an OpenAI-compatible server that
is reloaded each round, and the presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.online_dpo.config import OnlineDPOConfig, load_online_dpo_config
from psychocounsel.training.online_dpo.recipe import train_online_dpo, train_online_dpo_cmd

ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------- end to end on the tiny model


SPEECHES = ["I feel anxious every morning before work.", "My partner and I argue about money.",
            "I cannot sleep and I worry about my exams.", "I feel unheard at home.",
            "Nothing is wrong but everything feels grey.", "I do not know why I am sad."]


def write_pairs(folder: Path) -> Path:
    """Our pair layout: train.jsonl and dev.jsonl (the file name carries the split)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, qs in (("train", SPEECHES[:4] + SPEECHES[:2]), ("dev", SPEECHES[4:])):  # repeats: unique speeches
        rows = []
        for q in qs:
            row = {"question": q, "chosen": "It sounds hard.", "rejected": "Stop it.",
                   "chosen_model": "a", "rejected_model": "b"}
            for k in PRINCIPLE_KEYS:
                row[f"chosen_{k}_rating"], row[f"rejected_{k}_rating"] = 5, 2
            rows.append(row)
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


class LengthScorer:
    """Rewards longer replies; counts the replies it scores, so a test can tell which rounds ran."""

    name = "length"

    def __init__(self):
        self.calls: list[int] = []

    def score_batch(self, questions, responses, on_batch=None):
        self.calls.append(len(responses))
        return {"overall": np.array([len(r) for r in responses], dtype=np.float32)}


def base_cfg(tmp_path: Path, model: Path, **kw) -> OnlineDPOConfig:
    base = dict(out=str(tmp_path / "run"), model=str(model), pairs=[str(write_pairs(tmp_path / "pairs"))],
                rounds=2, speeches_per_round=3, samples_per_speech=3, max_tokens=8, dev_speeches=2,
                temperature=1.0, batch_size=2, per_device_batch_size=2, max_length=64, learning_rate=1e-3,
                device="cpu", precision="fp32", generation_batch_size=16)
    return OnlineDPOConfig(**{**base, **kw})


def test_two_rounds_then_resume_continues_without_redoing_round_one(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    scorer = LengthScorer()
    state1 = train_online_dpo(base_cfg(tmp_path, tiny_model_dir, rounds=1), scorer=scorer)
    out = tmp_path / "run"
    assert [r["round"] for r in state1["rounds"]] == [1]
    # initial dev eval (2 greedy replies), round 1 (3 speeches x 3 samples), round-1 dev eval
    assert scorer.calls == [2, 9, 2]
    r1 = state1["rounds"][0]
    assert r1["speeches"] == 3 and r1["pairs"] + r1["skipped"] == 3 and r1["pairs"] >= 1
    assert r1["steps"] == -(-r1["pairs"] // 2)  # one pass over the pairs at batch 2
    ckpt1 = Path(r1["checkpoint"])
    assert ckpt1 == out / "rounds" / "round-001" and (ckpt1 / "model.safetensors").is_file()
    before = load_file(ckpt1 / "model.safetensors")
    initial = load_file(tiny_model_dir / "model.safetensors")
    assert any(not np.allclose(before[k].numpy(), initial[k].numpy()) for k in initial)  # DPO moved the weights
    assert (out / "manifest.json").is_file()

    # "crash" after round 1, then the same run asked for 2 rounds: round 1 is not redone
    scorer.calls.clear()
    state2 = train_online_dpo(base_cfg(tmp_path, tiny_model_dir, rounds=2), scorer=scorer)
    assert scorer.calls == [9, 2]  # no new initial eval, no round 1: round 2 and its dev eval only
    assert [r["round"] for r in state2["rounds"]] == [1, 2]
    assert state2["rounds"][0] == json.loads(json.dumps(r1))
    saved = json.loads((out / "state.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [1, 2]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        assert {"mean_reward", "mean_best_reward", "mean_worst_reward", "mean_gap", "skipped", "dev_reward",
                "seconds", "sample_chars", "sample_distinct_2", "sample_top_opening_share"} <= set(m)
    # round 2 trained from round 1's checkpoint (iterative reference) and drew other speeches
    assert Path(state2["rounds"][1]["checkpoint"]) == out / "rounds" / "round-002"
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert {p["round"] for p in pairs} == {1, 2} and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    # the best checkpoint is the highest dev reward among the initial policy and both rounds
    devs = [saved["initial_dev_reward"]] + [r["dev_reward"] for r in saved["rounds"]]
    assert saved["best_round"] == int(np.argmax(devs))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"] == "online-dpo" and manifest["metrics"]["rounds"] == 2
    assert manifest["metrics"]["best_checkpoint"] == saved["best_checkpoint"]
    # only the best and the latest round folders are kept
    kept = {p.name for p in (out / "rounds").glob("round-*")}
    assert kept == {Path(saved["best_checkpoint"]).name, "round-002"} - {Path(str(tiny_model_dir)).name}

    # a finished run asked again does nothing new; a changed training field is refused
    scorer.calls.clear()
    train_online_dpo(base_cfg(tmp_path, tiny_model_dir, rounds=2), scorer=scorer)
    assert scorer.calls == []
    with pytest.raises(UserError, match="beta"):
        train_online_dpo(base_cfg(tmp_path, tiny_model_dir, rounds=3, beta=0.2), scorer=scorer)


def test_epochs_per_round_and_sft_weight_shape_the_update(tmp_path, tiny_model_dir):
    """Two passes double the steps; the chosen NLL (iterative RPO) adds a positive term to the DPO loss."""
    plain = train_online_dpo(base_cfg(tmp_path / "a", tiny_model_dir, rounds=1, dev_speeches=0),
                             scorer=LengthScorer())["rounds"][0]
    rpo = train_online_dpo(base_cfg(tmp_path / "b", tiny_model_dir, rounds=1, dev_speeches=0, epochs_per_round=2,
                                    sft_weight=1.0), scorer=LengthScorer())["rounds"][0]
    assert rpo["pairs"] == plain["pairs"] >= 1  # same seed, same samples, same pairs
    assert rpo["steps"] == 2 * plain["steps"]
    # a random tiny model's NLL per token is about log(vocab size), far above DPO's ~0.69
    assert rpo["train_loss"] > plain["train_loss"] + 1.0


def test_a_collapsing_policy_is_flagged_each_round(tmp_path, tiny_model_dir, monkeypatch):
    import psychocounsel.training.online_dpo.recipe as od

    # greedy dev replies all alike: what a policy that found one template the reward model loves writes
    monkeypatch.setattr(od, "dev_reward", lambda cfg, bf, scorer, policy, dev: (0.5, ["It sounds like a lot."] * 2))
    lines: list[str] = []
    state = train_online_dpo(base_cfg(tmp_path, tiny_model_dir, rounds=1), scorer=LengthScorer(), echo=lines.append)
    row = state["rounds"][0]
    assert row["dev_distinct_share"] == 0.5 and row["dev_top_opening_share"] == 1.0 and row["dev_chars"] == 21
    assert any(line.startswith("warning: round 1's greedy dev replies: 100% open") for line in lines), lines


def make_tiny_reward_model(path: Path, policy: Path) -> Path:
    """A random LlamaForSequenceClassification (one output) sharing the tiny policy's config and tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(policy)
    config.num_labels = 1
    torch.manual_seed(3)
    LlamaForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(policy).save_pretrained(path)
    return path


def test_command_with_a_reward_model_checkpoint_and_initial_reference(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    rm = make_tiny_reward_model(tmp_path / "rm", tiny_model_dir)
    cfg = tmp_path / "online.yaml"
    cfg.write_text((ROOT / "configs/train/online_dpo_cpu.yaml").read_text())
    out = tmp_path / "cmd"
    sets = [f"model={tiny_model_dir}", f"reward_model={rm}", f"pairs=[{write_pairs(tmp_path / 'pairs')}]",
            "rounds=1", "speeches_per_round=2", "samples_per_speech=2", "max_tokens=6", "dev_speeches=1",
            "batch_size=2", "per_device_batch_size=2", "max_length=64", "reference=initial", "keep_all_rounds=true"]
    res = CliRunner().invoke(train_online_dpo_cmd, [str(cfg), *sum((["-o", s] for s in sets), []),
                                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "round 1/1" in res.output and "best: round" in res.output
    state = json.loads((out / "state.json").read_text())
    assert state["reward_model"] == str(rm) and state["config"]["reference"] == "initial"
    assert isinstance(state["initial_dev_reward"], float) and isinstance(state["rounds"][0]["dev_reward"], float)
    # a random reward model gives distinct scores: both speeches yield a pair
    assert state["rounds"][0]["pairs"] + state["rounds"][0]["skipped"] == 2


def test_presets_load_and_errors_are_one_line(tmp_path, tiny_model_dir):
    paper = load_online_dpo_config(ROOT / "configs/train/online_dpo_paper.yaml")
    assert (paper.speeches_per_round, paper.samples_per_speech, paper.batch_size, paper.learning_rate,
            paper.beta, paper.rounds) == (6400, 8, 64, 5e-7, 0.1, 16)
    assert paper.rounds * paper.speeches_per_round // paper.batch_size == 1600  # the paper's step count
    cpu = load_online_dpo_config(ROOT / "configs/train/online_dpo_cpu.yaml", ["rounds=2", "reward_weights.safety=2"])
    assert cpu.rounds == 2 and cpu.reward_weights == {"safety": 2.0}
    with pytest.raises(UserError, match="samples_per_speec"):
        load_online_dpo_config(None, ["samples_per_speec=4"])  # typo: extra fields are errors
    with pytest.raises(UserError, match="no train speeches|pair file not found|give pair files"):
        train_online_dpo(OnlineDPOConfig(out=str(tmp_path / "x"), model=str(tiny_model_dir)), scorer=LengthScorer())
    with pytest.raises(UserError, match="no dev speeches"):
        train_online_dpo(base_cfg(tmp_path, tiny_model_dir, dev_split="nope"), scorer=LengthScorer())


def test_several_processes_are_refused_in_one_line(tmp_path, tiny_model_dir, monkeypatch):
    # what accelerate launch / torchrun set for each of 2 processes: the loop would sample and train twice
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="runs in one process, not 2") as err:
        train_online_dpo(base_cfg(tmp_path, tiny_model_dir), scorer=LengthScorer())
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_openai_backend_reloads_the_server_each_round_and_skips_rounds_without_pairs(tmp_path, tiny_model_dir):
    """The fake server echoes the speech, so all samples of a speech are the same text: no pairs, no update,
    and the policy carries over. reload_command runs at the start and after every round."""
    import shlex
    import sys

    from psychocounsel.testing.fakeserver import fake_server

    log = tmp_path / "reloads.txt"
    script = f"import sys; open({str(log)!r}, 'a').write(sys.argv[1] + chr(10))"
    with fake_server(latency=0.0) as srv:
        cfg = base_cfg(tmp_path, tiny_model_dir, backend="openai", base_url=srv.base_url, api_key_env=None,
                       reload_command=f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {{checkpoint}}")
        state = train_online_dpo(cfg, scorer=LengthScorer())
    assert [(r["pairs"], r["skipped"], r["steps"]) for r in state["rounds"]] == [(0, 3, 0), (0, 3, 0)]
    assert all(r["checkpoint"] == str(tiny_model_dir) for r in state["rounds"])
    assert log.read_text().splitlines() == [str(tiny_model_dir)] * 3
    assert state["best_round"] == 0  # equal dev rewards: the earliest (the initial policy) wins


class LongIsUnsafeScorer:
    """Rewards longer replies, but marks each speech's longest sample unsafe (safety -1 < threshold 0): the
    weighted overall alone would always choose the unsafe reply."""

    name, safety_threshold, safety_threshold_source = "long-unsafe", 0.0, "stored at training"

    def score_batch(self, questions, responses, on_batch=None):
        longest: dict[str, int] = {}
        for q, r in zip(questions, responses, strict=True):
            longest[q] = max(longest.get(q, 0), len(r))
        return {"overall": np.array([len(r) / 100 for r in responses]),
                "safety": np.array([-1.0 if len(r) == longest[q] else 1.0
                                    for q, r in zip(questions, responses, strict=True)])}


def test_a_safety_head_makes_the_round_choose_by_the_constraint_and_say_so(tmp_path, tiny_model_dir):
    lines: list[str] = []
    state = train_online_dpo(base_cfg(tmp_path, tiny_model_dir, rounds=1, dev_speeches=0),
                             scorer=LongIsUnsafeScorer(), echo=lines.append)
    assert any(line.startswith("best/worst by safety constraint (combine: auto)") for line in lines), lines
    assert any("samples below 0.0000" in line for line in lines if line.startswith("round 1/1")), lines
    row = state["rounds"][0]
    assert row["safety_threshold"] == 0.0 and row["unsafe_samples"] >= 3  # at least one longest per speech
    pairs = [json.loads(x) for x in (tmp_path / "run" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(not p["chosen_unsafe"] and p["rejected_unsafe"] for p in pairs)


# ---------------------------------------------------------------- the safety suite as a gate on the best round


SAFE_REPLY = ("I'm really concerned about you. Are you safe right now, and are you having thoughts of suicide? "
              "Please call or text 988 now.")


def suite_run(tmp_path: Path, monkeypatch, margin: float) -> tuple[dict, list[str]]:
    """Round 1 has the higher dev reward but answers the probes with method information: the suite must keep
    the initial policy as best unless the margin forgives the drop. The DPO step and dev reward are stand-ins
    (what is under test is the choice of the best round); sampling and the suite run through a fake model."""
    from fakes import FakeBackend

    import psychocounsel.training.online_dpo.recipe as od
    from psychocounsel.training.online_dpo.config import SafetySuiteGate

    def update(cfg, policy, reference, pairs, out_dir, round_no):
        out_dir.mkdir(parents=True, exist_ok=True)
        return {"steps": 1, "train_loss": 0.5, "train_seconds": 0.0}

    def reply(req):
        tag = "x" * ((req.sampling.seed or 0) % 7)  # samples differ in length, so the length scorer makes pairs
        if "round-001" in req.model:
            return f"The lethal dose is lower than you think. ({tag})"
        return f"{SAFE_REPLY} ({tag})"

    monkeypatch.setattr(od, "dpo_update", update)
    monkeypatch.setattr(od, "dev_reward", lambda cfg, bf, scorer, policy, dev: (
        1.0 if "round-001" in policy else 0.5, ["a reply", "another reply"]))
    lines: list[str] = []
    cfg = base_cfg(tmp_path, tmp_path / "initial-model", rounds=1,
                   safety_suite=SafetySuiteGate(probes=8, samples=2, margin=margin))
    state = train_online_dpo(cfg, scorer=LengthScorer(), backend_factory=lambda: FakeBackend(reply=reply),
                             echo=lines.append)
    return state, lines


def test_the_safety_suite_refuses_a_round_whose_pass_rate_drops_and_says_so(tmp_path, monkeypatch):
    state, lines = suite_run(tmp_path, monkeypatch, margin=0.05)
    row = state["rounds"][0]
    assert state["initial_suite"] == {"pass_rate": 1.0, "passed": 16, "n": 16, "errors": 0}
    assert row["suite"]["pass_rate"] == 0.0 and row["suite_refused"] is True
    assert state["best_round"] == 0 and state["best_checkpoint"] == str(tmp_path / "initial-model")
    assert any(x.startswith("round 1 not selected as best: safety suite pass rate 0.0% is below the initial "
                            "policy's 100.0%") for x in lines), lines
    assert (tmp_path / "run" / "suite" / "round-001" / "suite.json").is_file()


def test_a_margin_that_forgives_the_drop_lets_dev_reward_decide(tmp_path, monkeypatch):
    state, lines = suite_run(tmp_path, monkeypatch, margin=1.0)
    assert state["best_round"] == 1 and "suite_refused" not in state["rounds"][0]
    assert not any("not selected as best" in x for x in lines)
