"""train-rm on a tiny random Llama: the loss against hand-computed values, over-long accounting, the saved
checkpoint, resume, LoRA, the published parquet schema and the command line."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from pairfiles import BAD, GOOD, published

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.common import load_pairs_dataset
from psychocounsel.training.reward import (
    RewardModelConfig,
    load_reward_config,
    train_reward_model,
    train_rm_cmd,
)
from psychocounsel.training.reward_data import tokenize_pairs
from psychocounsel.training.reward_scoring import load_reward_model, score_token_ids
from psychocounsel.training.reward_trainer import prepare_reward_training

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
def cfg_for(tiny_model_dir, data, out, **kw) -> RewardModelConfig:
    base = dict(model=str(tiny_model_dir), train_pairs=str(data), output_dir=str(out), max_length=64,
                batch_size=4, per_device_batch_size=2, max_steps=2, learning_rate=1e-3, warmup_ratio=0.0,
                logging_steps=1, save_steps=2, progress=False)
    return RewardModelConfig(**{**base, **kw})


def test_presets_load_and_typos_are_errors(tmp_path):
    paper = load_reward_config(CONFIGS / "rm_paper.yaml")
    assert (paper.epochs, paper.batch_size, paper.learning_rate, paper.max_length) == (2, 128, 9e-6, 2048)
    cpu = load_reward_config(CONFIGS / "rm_cpu.yaml", ["max_steps=3"])
    assert cpu.max_steps == 3 and cpu.model == "embedded"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ntrain_pairs: y\noutput_dir: z\nlearning_rat: 1\n")
    with pytest.raises(UserError, match="learning_rat"):
        load_reward_config(bad)


def test_tokenization_is_trls_and_overlong_pairs_are_counted(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    published(tmp_path, 4, "train", long_response=1)
    ds = load_pairs_dataset(tmp_path)
    t = tokenize_pairs(ds, tok, max_length=64, overlong="truncate")
    # The same ids TRL's own preprocessing makes: chat template over prompt + completion.
    assert t.chosen_ids[0] == tok.apply_chat_template(ds[0]["prompt"] + ds[0]["chosen"], tokenize=True,
                                                      return_dict=True)["input_ids"]
    full = tok.apply_chat_template(ds[1]["prompt"] + ds[1]["chosen"], tokenize=True, return_dict=True)["input_ids"]
    assert len(full) > 64 and t.chosen_ids[1] == full[:63] + full[-1:]  # the end-of-turn token survives
    assert t.stats | {"longest_tokens": 0} == {"pairs": 4, "overlong": 1, "action": "truncate", "dropped": 0,
                                               "no_response_left": 0, "kept": 4, "max_length": 64,
                                               "longest_tokens": 0}
    d = tokenize_pairs(ds, tok, max_length=64, overlong="drop")
    assert (d.stats["overlong"], d.stats["dropped"], len(d.chosen_ids)) == (1, 1, 3)
    # A prompt that alone fills max_length leaves two identical sequences: dropped, counted apart.
    s = tokenize_pairs(ds, tok, max_length=12, overlong="truncate")
    assert s.stats["overlong"] == 4 and s.stats["no_response_left"] == 4 and s.stats["kept"] == 0
    assert t.margins == pytest.approx([2.0, 1.0, 2.0, 1.0])


def test_bt_loss_equals_hand_computed_with_margin_and_centring(tmp_path, tiny_model_dir):
    published(tmp_path / "data", 4, "train")
    cfg = cfg_for(tiny_model_dir, tmp_path / "data", tmp_path / "out", batch_size=4, per_device_batch_size=4,
                  max_steps=1, margin=True, margin_scale=0.5, center_rewards_coefficient=0.01)
    run = prepare_reward_training(cfg)
    model, pad = run.trainer.model, run.tokenizer.pad_token_id
    # Rewards one sequence at a time (no padding), then the loss by hand.
    r_c = torch.tensor(score_token_ids(model, run.train.chosen_ids, pad, batch_size=1))
    r_r = torch.tensor(score_token_ids(model, run.train.rejected_ids, pad, batch_size=1))
    m = torch.tensor([1.0, 0.5, 1.0, 0.5])  # 0.5 x score gaps 2, 1, 2, 1
    assert run.train.margins == pytest.approx(m.tolist())
    hand = (-torch.nn.functional.logsigmoid(r_c - r_r - m)).mean() + 0.01 * ((r_c + r_r) ** 2).mean()
    # The loss on our packed batch (one row per pair, the shared speech once) and on TRL's own collation.
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from psychocounsel.training.batching import LengthGroupedBatches

    assert isinstance(run.trainer._get_train_sampler(), LengthGroupedBatches)  # the length column survived
    rows = [run.trainer.train_dataset[i] for i in range(4)]
    batch = run.trainer.data_collator(rows)
    assert set(batch) == {"input_ids", "attention_mask", "position_ids", "read_index", "n_tokens", "margin"}
    assert batch["input_ids"].shape[0] == 4 and int(batch["n_tokens"]) == sum(
        len(c) + len(r) for c, r in zip(run.train.chosen_ids, run.train.rejected_ids))
    trl_batch = DataCollatorForPreference(pad_token_id=pad)(rows)
    with torch.no_grad():
        ours, trl_loss = (run.trainer.compute_loss(model, dict(b)) for b in (batch, trl_batch))
    assert float(ours) == pytest.approx(float(hand), abs=1e-5)
    assert float(trl_loss) == pytest.approx(float(hand), abs=1e-5)
    # ... and the loss the trainer logs for its one step (the whole data set is the batch).
    run.trainer.train()
    assert run.trainer.state.log_history[0]["loss"] == pytest.approx(float(hand), rel=1e-3)


def test_packed_pairs_give_each_sequence_its_own_attention_and_tokens():
    from psychocounsel.training.reward_trainer import (
        SharedPromptCollator,
        shared_prefix_length,
    )

    pad = 0
    # a shared prefix [5, 6, 7]; the chosen ends in padding-id tokens (pad == eos tokenizers): its reward is read
    # at its last other token, as a sequence classifier reads it, so the cut keeps that token in the rest
    chosen, rejected = [5, 6, 7, 8, 9, 0], [5, 6, 7, 4]
    assert shared_prefix_length(chosen, rejected, pad) == 3
    assert shared_prefix_length([5, 6, 0], [5, 6, 0, 0], pad) == 1  # both end in pad: keep their last real token
    assert shared_prefix_length([1, 2], [3, 2], pad) == 0
    b = SharedPromptCollator(pad)([{"chosen_ids": chosen, "rejected_ids": rejected},
                                   {"chosen_ids": [5, 6, 1], "rejected_ids": [5, 6, 2, 3]}])
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 4], [5, 6, 1, 2, 3, 0, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 3], [0, 1, 2, 2, 3, 0, 0]]
    assert b["read_index"].tolist() == [[4, 6], [2, 4]] and int(b["n_tokens"]) == 6 + 4 + 3 + 4
    m = b["attention_mask"][0, 0]
    assert m[6].tolist() == [True, True, True, False, False, False, True]  # rejected: prefix + itself only
    assert m[4].tolist() == [True] * 5 + [False] * 2  # chosen: prefix + its own earlier tokens
    assert b["attention_mask"][1, 0, 5].tolist() == [False] * 5 + [True, False]  # padding sees only itself
    # a pair with nothing to share: the whole batch is collated as TRL does
    plain = SharedPromptCollator(pad)([{"chosen_ids": [1, 2], "rejected_ids": [3, 2]}])
    assert set(plain) == {"input_ids", "attention_mask"} and plain["input_ids"].tolist() == [[1, 2], [3, 2]]


def test_published_parquet_trains_saves_a_standard_checkpoint_and_manifest(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    published(tmp_path / "data", 8, "train", long_response=3)
    published(tmp_path / "data", 4, "test")
    logs: list[str] = []
    cfg = cfg_for(tiny_model_dir, tmp_path / "data", tmp_path / "out", overlong="drop", eval_steps=2)
    manifest = train_reward_model(cfg, log=logs.append)
    assert "train: 1 of 8 pairs longer than 64 tokens: dropped (7 kept)" in logs
    assert manifest["overlong"]["train"]["dropped"] == 1 and manifest["overlong"]["test"]["overlong"] == 0
    assert manifest["recipe"] == "reward_bt" and manifest["data_hash"] and manifest["versions"]["trl"]
    assert manifest["config"]["overlong"] == "drop" and manifest["batch"]["accumulation"] == 2
    met = manifest["metrics"]
    assert met["steps"] == 2 and met["train_loss"] > 0 and met["eval"]["test"]["pairs"] == 4
    assert [h["step"] for h in manifest["log_history"] if "loss" in h] == [1, 2]
    assert [h["step"] for h in manifest["log_history"] if "eval_accuracy" in h] == [2]  # TRL's eval on test
    # A plain sequence-classification checkpoint, with the pad token the score position depends on.
    out = tmp_path / "out"
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    model, tok = load_reward_model(out)
    ds = load_pairs_dataset(tmp_path / "data", split="test")
    t = tokenize_pairs(ds, tok, 64)
    s = score_token_ids(model, t.chosen_ids + t.rejected_ids, tok.pad_token_id, batch_size=3)
    acc = sum(c > r for c, r in zip(s[:4], s[4:])) / 4
    assert acc == met["eval"]["test"]["accuracy"]
    # Batched right-padded scores equal unbatched ones (the score is read at the last real token).
    assert s == pytest.approx(score_token_ids(model, t.chosen_ids + t.rejected_ids, tok.pad_token_id, 1), abs=1e-5)


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    published(tmp_path / "data", 8, "train")

    def losses(m):
        return {h["step"]: h["loss"] for h in m["log_history"] if "loss" in h}

    full = train_reward_model(cfg_for(tiny_model_dir, tmp_path / "data", tmp_path / "a", max_steps=4))

    class Crash(TrainerCallback):  # stop after step 2, as a killed job would (its checkpoint-2 is saved)
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                control.should_training_stop = True

    cfg = cfg_for(tiny_model_dir, tmp_path / "data", tmp_path / "b", max_steps=4)
    train_reward_model(cfg, callbacks=[Crash()])
    assert (tmp_path / "b" / "checkpoint-2").is_dir()
    resumed = train_reward_model(cfg.model_copy(update={"resume_from_checkpoint": "latest"}))
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["metrics"]["steps"] == 4
    a, b = losses(full), losses(resumed)  # steps 1-2 come back from checkpoint-2's trainer_state.json
    assert set(a) == set(b) == {1, 2, 3, 4}
    assert [b[3], b[4]] == pytest.approx([a[3], a[4]], rel=1e-4)
    with pytest.raises(UserError, match="no checkpoint"):
        train_reward_model(cfg.model_copy(update={"output_dir": str(tmp_path / "c"),
                                                  "resume_from_checkpoint": "latest"}))


def test_cli_lora_on_our_jsonl_gives_a_merged_checkpoint(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    rows = []
    for i in range(8):
        row = {"question": f"I cannot sleep before exams {i}.", "chosen": GOOD[i % 2], "rejected": BAD[i % 2],
               "chosen_model": "a", "rejected_model": "b", "split": "train" if i < 6 else "dev"}
        row |= {f"chosen_{k}_rating": 5 for k in PRINCIPLE_KEYS} | {f"rejected_{k}_rating": 2 for k in PRINCIPLE_KEYS}
        rows.append(row)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    conf = tmp_path / "rm.yaml"
    conf.write_text(yaml.safe_dump({"model": "unused", "train_pairs": "unused", "output_dir": "unused",
                                    "max_length": 64, "batch_size": 2, "per_device_batch_size": 2,
                                    "max_steps": 2, "learning_rate": 1e-3, "lora": {"r": 4}}))
    res = CliRunner().invoke(train_rm_cmd, [str(conf), "--model", str(tiny_model_dir), "--train", str(data),
                                            "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "train: 0 of 6 pairs longer than 64 tokens" in res.output and "eval dev: accuracy" in res.output
    out = tmp_path / "out"
    assert not (out / "adapter_config.json").exists()  # merged: no PEFT needed to load it
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert not any("lora" in n for n, _ in model.named_parameters())
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["lora"]["r"] == 4 and m["metrics"]["eval"]["dev"]["pairs"] == 2
    from psychocounsel.cli import main

    bad = CliRunner().invoke(main, ["train-rm", str(conf), "--model", str(tiny_model_dir), "--train",
                                            str(tmp_path / "nope.jsonl"), "--out", str(out)])
    # registered in the CLI, the command turns the UserError into one line and exit code 2
    assert bad.exit_code == 2 and "not found" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow
def test_embedded_smollm2_gguf_trains_a_step(tmp_path):
    pytest.importorskip("gguf")
    published(tmp_path / "data", 4, "train")
    published(tmp_path / "data", 2, "test")
    cfg = RewardModelConfig(model="embedded", train_pairs=str(tmp_path / "data"), output_dir=str(tmp_path / "out"),
                            max_length=128, batch_size=2, per_device_batch_size=2, max_steps=1, progress=False)
    m = train_reward_model(cfg)
    assert m["base_model"]["kind"] == "gguf" and m["metrics"]["eval"]["test"]["pairs"] == 2
