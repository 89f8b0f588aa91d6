"""Shared pieces of the drafting-assistant tests: a deployment over the fake server, clients, a reward model."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.serve.config import ServeConfig

ADMIN = "serve-test-admin-token-0123456789"
CRISIS = "I can't do this anymore. I want to kill myself and I have been saving up my pills."
CALM = "Work has been stressful lately and I keep snapping at my partner when I get home."


def config(tmp_path: Path, base_url: str, **kw) -> ServeConfig:
    policy = kw.pop("policy", {})
    return ServeConfig.model_validate({
        "backend": {"type": "openai", "base_urls": [base_url], "api_key_env": None, "max_retries": 0},
        "model": "fake-policy", "db": str(tmp_path / "serve.sqlite"), "policy": policy, **kw})


class WordScorer:
    """A reward model in the Scorer shape whose scores are worked out by hand: per principle, a count of that
    principle's cue words in the response; overall = the mean over principles."""

    name = "word-scorer"
    CUES: ClassVar[dict[str, str]] = {"empathy": "hear", "relevance": "work", "clarity": "plain", "safety": "safe", "exploration": "?",
            "autonomy": "choose", "staging": "ready"}

    def score_batch(self, questions, responses, on_batch=None):
        heads = {p: np.array([float(r.count(self.CUES.get(p, "\0"))) for r in responses]) for p in PRINCIPLE_KEYS}
        heads["overall"] = np.mean([heads[p] for p in PRINCIPLE_KEYS], axis=0)
        return heads


def client_for(app, token: str):
    """A TestClient signed in as a clinician with their private link (cookie), plus their CSRF token."""
    from fastapi.testclient import TestClient

    c = TestClient(app, base_url="http://127.0.0.1")
    c.get(f"/c/{token}", follow_redirects=False)
    csrf = c.get("/workspace", headers={"accept": "application/json"}).json()["csrf"]
    return c, csrf


def run_uvicorn(app):
    """uvicorn serving ``app`` on a free loopback port in a thread; returns (base url, stop function)."""
    import threading
    import time

    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]

    def stop():
        srv.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop
