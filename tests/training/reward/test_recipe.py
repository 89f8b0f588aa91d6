"""train-rm end to end on the tiny random Llama: the saved checkpoint and its manifest, held-out accuracy from the
saved folder, resume, LoRA through the command line, the published parquet schema."""

import json

import pytest
import yaml
from click.testing import CliRunner
from pairfiles import BAD, GOOD, published
from recipe_configs import reward_cfg

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.common import load_pairs_dataset
from psychocounsel.training.reward.config import RewardModelConfig
from psychocounsel.training.reward.data import tokenize_pairs
from psychocounsel.training.reward.recipe import train_reward_model, train_rm_cmd
from psychocounsel.training.scoring import RewardScorer, score_ids


def test_published_parquet_trains_saves_a_standard_checkpoint_and_manifest(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    published(tmp_path / "data", 8, "train", long_response=3)
    published(tmp_path / "data", 4, "test")
    logs: list[str] = []
    cfg = reward_cfg(tiny_model_dir, tmp_path / "data", tmp_path / "out", overlong="drop", eval_steps=2)
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
    scorer = RewardScorer(out, batch_size=3)
    ds = load_pairs_dataset(tmp_path / "data", split="test")
    t = tokenize_pairs(ds, scorer.tokenizer, 64)
    s = scorer.score_ids(t.chosen_ids + t.rejected_ids)[:, 0]
    acc = sum(c > r for c, r in zip(s[:4], s[4:])) / 4
    assert acc == met["eval"]["test"]["accuracy"]
    # Batched right-padded scores equal unbatched ones (the score is read at the last real token).
    one = score_ids(scorer.model, t.chosen_ids + t.rejected_ids, scorer.pad_id, n_out=1, batch_size=1)[:, 0]
    assert s == pytest.approx(one, abs=1e-5)


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    published(tmp_path / "data", 8, "train")

    def losses(m):
        return {h["step"]: h["loss"] for h in m["log_history"] if "loss" in h}

    full = train_reward_model(reward_cfg(tiny_model_dir, tmp_path / "data", tmp_path / "a", max_steps=4))

    class Crash(TrainerCallback):  # stop after step 2, as a killed job would (its checkpoint-2 is saved)
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                control.should_training_stop = True

    cfg = reward_cfg(tiny_model_dir, tmp_path / "data", tmp_path / "b", max_steps=4)
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
