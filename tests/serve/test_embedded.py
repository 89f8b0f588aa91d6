"""The drafting assistant with its default backend: the embedded SmolLM2 drafts one reply (slow: loads the model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import ADMIN, CALM
from psychocounsel.serve.app import create_app
from psychocounsel.serve.config import load_serve_config


@pytest.mark.slow
def test_embedded_model_drafts_one_reply(tmp_path):
    cfg = load_serve_config(Path(__file__).resolve().parents[2] / "configs" / "serve.yaml", [f"db={tmp_path / 'serve.sqlite'}", "sampling.max_tokens=48",
                                                   "backend.device=cpu"])
    app = create_app(cfg, ADMIN)
    token = app.state.store.add_clinician("Dr. Local")[1]
    with TestClient(app) as c:
        got = c.post("/drafts", json={"message": CALM, "n": 1}, headers={"authorization": f"Bearer {token}"})
        assert got.status_code == 200, got.text
        view = got.json()
        assert len(view["drafts"]) == 1 and view["drafts"][0]["text"].strip()
        assert view["ranked"] is False and view["tier"] == "none"
