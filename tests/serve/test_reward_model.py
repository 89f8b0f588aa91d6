"""Ranking with a real trained reward model: train-rm-multihead on the tiny Llama (safety decides every pair),
served through ``reward_model:`` in the deployment file (training.scoring.load_scorer), end to end through the
JSON API. The drafts page and /v1/reward must show what the checkpoint says, head by head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safety_pairs import QUESTIONS, SAFE, UNSAFE, safety_pairs
from tiny_model import tiny_model_dir  # noqa: F401 (the session fixture)

from fakes import FakeBackend
from helpers import ADMIN, config
from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.serve.app import create_app
from psychocounsel.training.multihead.config import load_multihead_config
from psychocounsel.training.multihead.recipe import train_multihead_reward_model
from psychocounsel.training.scoring import load_scorer

PRESET = Path(__file__).parents[2] / "configs" / "train" / "multihead_cpu.yaml"
MESSAGE = QUESTIONS[0]
# The drafts the fake policy writes, by seed: draft 0 is the unsafe one, so ranking has to reorder them.
DRAFTS = [UNSAFE[0], SAFE[0], UNSAFE[1]]


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):  # noqa: F811
    """A per-principle reward model whose safety head has learnt SAFE > UNSAFE (the recipe's own test: 30 steps
    at lr 1e-3 take the safety head to 100% on these pairs), trained once for this file in a few seconds."""
    tmp = tmp_path_factory.mktemp("rm")
    cfg = load_multihead_config(PRESET, [f"model={tiny_model_dir}", "lr=1e-3", "max_steps=30", "batch_size=4",
                                         "max_length=128", "warmup_ratio=0", "logging_steps=100"])
    train_multihead_reward_model(cfg, safety_pairs(tmp / "data"), tmp / "rm")
    return tmp / "rm"


@pytest.fixture()
def app(checkpoint, tmp_path):
    cfg = config(tmp_path, "http://127.0.0.1:9/v1", reward_model=str(checkpoint), reward_device="cpu")
    return create_app(cfg, ADMIN, backend=FakeBackend(reply=lambda req: DRAFTS[req.sampling.seed]))


def test_the_trained_reward_model_ranks_drafts_head_by_head(app, checkpoint):
    token = app.state.store.add_clinician("Dr. Ranked")[1]
    expect = load_scorer(checkpoint, device="cpu").score_batch([MESSAGE] * 3, DRAFTS)
    with TestClient(app) as c:
        bearer = {"authorization": f"Bearer {token}"}
        view = c.post("/drafts", json={"message": MESSAGE, "n": 3}, headers=bearer).json()
        assert view["ranked"] is True and "ranked by the reward model" in view["ranking_note"]
        shown = view["drafts"]
        assert [d["index"] for d in shown] == list(np.argsort(-expect["overall"], kind="stable"))
        assert shown[0]["text"] == SAFE[0] and [d["rank"] for d in shown] == [1, 2, 3]
        for d in shown:
            i = d["index"]
            assert d["overall"] == pytest.approx(expect["overall"][i], abs=1e-3)
            assert set(d["principles"]) == set(PRINCIPLE_KEYS)
            assert d["principles"]["safety"] == pytest.approx(expect["safety"][i], abs=1e-3)
        # the safe draft is set apart by its safety head, and its reason says so
        assert shown[0]["reason"].startswith("1st of 3 by the reward model") and "strongest on safety" in shown[0]["reason"]
        # the page a clinician reopens shows the same scores and reasons
        again = c.get(f"/drafts/{view['set_id']}", headers=bearer).json()["drafts"]
        assert [(d["index"], d["principles"], d["reason"]) for d in again] == \
               [(d["index"], d["principles"], d["reason"]) for d in shown]
        # the reward API serves the same checkpoint, head by head
        got = c.post("/v1/reward", json={"prompts": [MESSAGE] * 3, "responses": DRAFTS},
                     headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert got["rewards"] == pytest.approx(expect["overall"].tolist(), abs=1e-4)
    assert got["principles"]["safety"] == pytest.approx(expect["safety"].tolist(), abs=1e-4)
    assert got["model"] == str(checkpoint)


def test_a_single_score_checkpoint_ranks_without_principles(tiny_model_dir, tmp_path):  # noqa: F811
    """A train-rm-shaped checkpoint (one output, sequence classification) ranks by its one score; no per-principle
    columns are invented for it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "rm")
    cfg = config(tmp_path, "http://127.0.0.1:9/v1", reward_model=str(tmp_path / "rm"), reward_device="cpu")
    app = create_app(cfg, ADMIN, backend=FakeBackend(reply=lambda req: DRAFTS[req.sampling.seed]))
    token = app.state.store.add_clinician("Dr. One")[1]
    expect = load_scorer(tmp_path / "rm", device="cpu").score_batch([MESSAGE] * 3, DRAFTS)
    with TestClient(app) as c:
        view = c.post("/drafts", json={"message": MESSAGE, "n": 3}, headers={"authorization": f"Bearer {token}"}).json()
    assert [d["index"] for d in view["drafts"]] == list(np.argsort(-expect, kind="stable"))
    assert all(d["principles"] == {} for d in view["drafts"])
    assert view["drafts"][0]["reason"] == f"1st of 3 by the reward model ({expect.max():.2f})"
