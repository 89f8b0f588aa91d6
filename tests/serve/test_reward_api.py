"""The reward model over HTTP: /v1/reward and OpenRLHF's /get_reward shape, scored by a hand-checkable model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers import ADMIN, WordScorer, config
from psychocounsel.serve.app import create_app
from psychocounsel.serve.reward_api import split_query

AUTH = {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture()
def app(tmp_path):
    return create_app(config(tmp_path, "http://127.0.0.1:9/v1"), ADMIN, scorer=WordScorer())


def test_v1_reward_overall_and_principles(app):
    with TestClient(app) as c:
        got = c.post("/v1/reward", json={"prompts": ["a", "b"], "responses": ["I hear you. Are you safe?", "Go."]},
                     headers=AUTH).json()
    # empathy "hear" 1, safety "safe" 1, exploration "?" 1: mean over 7 principles = 3/7; the other 0
    assert got["rewards"] == pytest.approx([3 / 7, 0.0])
    assert got["principles"]["empathy"] == [1.0, 0.0] and got["model"] == "word-scorer"


def test_get_reward_openrlhf_shape(app):
    chatml = ("<|im_start|>system\nBe kind<|im_end|>\n<|im_start|>user\nI feel low<|im_end|>\n"
              "<|im_start|>assistant\nI hear you. Are you safe?<|im_end|>")
    llama = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nwork stress<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nGo for a walk.<|eot_id|>")
    with TestClient(app) as c:
        got = c.post("/get_reward", json={"query": [chatml, llama]}, headers=AUTH)
        assert got.status_code == 200 and set(got.json()) == {"rewards"}
        assert got.json()["rewards"] == pytest.approx([3 / 7, 0.0])
        with_prompts = c.post("/get_reward", json={"query": ["Q: hi A: I hear you?"], "prompts": ["Q: hi"],
                                                  "labels": ["x"]}, headers=AUTH).json()
        assert with_prompts["rewards"] == pytest.approx([2 / 7])
        bad = c.post("/get_reward", json={"query": ["no markers here"]}, headers=AUTH)
        assert bad.status_code == 422 and "query[0]" in bad.json()["error"]


def test_no_reward_model_is_503(tmp_path):
    app = create_app(config(tmp_path, "http://127.0.0.1:9/v1"), ADMIN)
    with TestClient(app) as c:
        assert c.post("/v1/reward", json={"prompts": ["a"], "responses": ["b"]}, headers=AUTH).status_code == 503


def test_split_query_reads_the_last_turns():
    q = ("<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nold reply<|im_end|>\n<|im_start|>user\nsecond"
         "<|im_end|>\n<|im_start|>assistant\nnew reply<|im_end|>")
    assert split_query(q) == ("second", "new reply")
    assert split_query("Human: hi\nAssistant: hello") == ("hi", "hello")
    assert split_query("abc", "xyz") is None
