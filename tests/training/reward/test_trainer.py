"""train-rm's trainer: the loss of a packed batch (the shared speech run once) against the loss computed by hand
and against TRL's own collation, and the packed layout on hand-made token ids."""

import pytest
import torch
from pairfiles import published
from recipe_configs import reward_cfg

from psychocounsel.training.batching import LengthGroupedBatches
from psychocounsel.training.reward.trainer import SharedPromptCollator, prepare_reward_training, shared_prefix_length
from psychocounsel.training.scoring import score_ids


def test_bt_loss_equals_hand_computed_with_margin_and_centring(tmp_path, tiny_model_dir):
    published(tmp_path / "data", 4, "train")
    cfg = reward_cfg(tiny_model_dir, tmp_path / "data", tmp_path / "out", batch_size=4, per_device_batch_size=4,
                  max_steps=1, margin=True, margin_scale=0.5, center_rewards_coefficient=0.01)
    run = prepare_reward_training(cfg)
    model, pad = run.trainer.model, run.tokenizer.pad_token_id
    # Rewards one sequence at a time (no padding), then the loss by hand.
    r_c = torch.tensor(score_ids(model, run.train.chosen_ids, pad, n_out=1, batch_size=1)[:, 0])
    r_r = torch.tensor(score_ids(model, run.train.rejected_ids, pad, n_out=1, batch_size=1)[:, 0])
    m = torch.tensor([1.0, 0.5, 1.0, 0.5])  # 0.5 x score gaps 2, 1, 2, 1
    assert run.train.margins == pytest.approx(m.tolist())
    hand = (-torch.nn.functional.logsigmoid(r_c - r_r - m)).mean() + 0.01 * ((r_c + r_r) ** 2).mean()
    # The loss on our packed batch (one row per pair, the shared speech once) and on TRL's own collation.
    from trl.trainer.reward_trainer import DataCollatorForPreference

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
