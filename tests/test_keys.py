"""Stored keys stay byte-identical: a run or evaluation folder written by an earlier version keeps its cache
and its items. The hex strings below were computed by the code that wrote those folders; a change that moves
any of them orphans every stored response, judgment, verdict and call of every existing run.

Each scenario runs the real stages on a fake model and reads back every key the store holds: response ids,
judge fingerprints, pair plans, evaluation item keys and call-cache keys. The speech holds non-ASCII text, so
the two fingerprint styles (data runs escape it, evaluations do not) both show. A key that changes on purpose
(a new prompt version, a new field that shapes answers) changes here with a sentence saying why.
"""

import json

from fakes import FakeBackend
from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.backends.base import ChatRequest, Sampling, cache_key
from psychocounsel.config import RunConfig
from psychocounsel.dataset import pipeline
from psychocounsel.evaluation.config import EvalConfig
from psychocounsel.evaluation.evaluate import evaluate
from psychocounsel.evaluation.session import Evaluation
from psychocounsel.runner import StageProgress
from psychocounsel.dataset.session import EVAL_KEYS, RUN_KEYS, CallBudget

SPEECH = ("Depuis l'été je me sens épuisée, naïve peut-être: my café shifts never end and "
          "I cry on the way home — “why can't I cope?”")
SPEECH2 = "My brother stopped calling me after the wedding and I keep wondering what I did wrong to him."
GOOD, BAD = "It sounds exhausting — what feels hardest right now?", "Just cope."


def _between(text: str, tag: str) -> str:
    return text.split(f"<{tag}>", 1)[-1].split(f"</{tag}>", 1)[0].strip()


def reply(req: ChatRequest) -> str:
    """Therapists answer by system prompt; judges fail their first attempt on the bad response, so the
    retry's call key (attempt #1) is pinned too."""
    last = req.messages[-1][1]
    if req.model != "judge":
        return BAD if req.messages and "impatient" in req.messages[0][1] else GOOD
    first_try = req.tag.endswith("#0")
    if "<response_a>" in last:
        return "garbage" if first_try and _between(last, "response_a") == BAD else '{"winner": "A", "rationale": "x"}'
    if BAD in last and first_try:
        return "not json"
    return json.dumps({"rationale": "r", **{k: (2 if BAD in last else 5) for k in PRINCIPLE_KEYS}})


def probs(prefix: list[dict], suffix: str) -> list[float]:
    if "Better response" in suffix:
        return [0.6, 0.4]
    return [0.1, 0.2, 0.3, 0.3, 0.1] if BAD in prefix[-1]["content"] else [0.0, 0.1, 0.2, 0.3, 0.4]


def _backend(local: bool) -> dict:
    return {"type": "local"} if local else {"type": "openai", "base_urls": ["http://127.0.0.1:9/v1"],
                                            "api_key_env": None}


def _keys(con, queries: dict[str, str]) -> dict[str, list[str]]:
    return {name: sorted({r[0] for r in con.execute(q)}) for name, q in queries.items()}


def run_keys(tmp_path, local: bool) -> dict[str, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "speeches.jsonl"
    src.write_text(json.dumps({"text": SPEECH}, ensure_ascii=False) + "\n", encoding="utf-8")
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "speeches": {"path": str(src), "min_chars": 10},
        "backends": {"fake": _backend(local)},
        "therapists": {"k": 3, "profiles": [
            {"name": "kind", "backend": "fake", "model": "m1"},
            # kept verbatim (trailing newline, empty text) in a data run's requests
            {"name": "rude", "backend": "fake", "model": "m2", "system_prompt": "You are impatient.\n"},
            {"name": "bare", "backend": "fake", "model": "m3", "system_prompt": ""}]},
        "judge": {"backend": "fake", "model": "judge", "max_attempts": 2,
                  **({"mode": "geval", "calibration": "zscore"} if local else {})},
    })
    run = pipeline.Run(cfg, progress=StageProgress(enabled=False))
    run.set_backend("fake", FakeBackend(reply=reply, probs=probs))
    try:
        pipeline.run_all(run, report=False)
        con = run.store.con
        out = _keys(con, {"responses": "SELECT id FROM responses", "judges": "SELECT judge FROM judgments",
                          "pairs": "SELECT plan FROM pairs", "calls": "SELECT key FROM calls"})
        used = {k for (k,) in con.execute("SELECT call_key FROM responses")}
        used |= {k for (ks,) in con.execute("SELECT call_keys FROM judgments") for k in json.loads(ks)}
    finally:
        run.close()
    assert sorted(used) == out["calls"]  # every row names the calls it came from, and only those
    return out


def eval_keys(tmp_path, local: bool, **over) -> dict[str, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "speeches.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in (SPEECH, SPEECH2)),
                   encoding="utf-8")
    cfg = EvalConfig.model_validate({
        "name": "pin", "out_dir": str(tmp_path / "eval"),
        "speeches": {"source": "file", "path": str(src), "min_chars": 10},
        "backends": {"fake": _backend(local)},
        "policy": {"name": "pol", "backend": "fake", "model": "m1"},
        "reference": {"name": "ref", "backend": "fake", "model": "m2", "system_prompt": "You are impatient.\n"},
        "pairwise": {"backend": "fake", "model": "judge", "max_attempts": 2, **({"mode": "choice"} if local else {})},
        "scores": {"backend": "fake", "model": "judge", "max_attempts": 2, **({"mode": "geval"} if local else {})},
        "bootstrap": {"n_boot": 0}, **over})
    ev = Evaluation(cfg, progress=StageProgress(enabled=False), budget=CallBudget())
    ev.set_backend("fake", FakeBackend(reply=reply, probs=probs))
    try:
        evaluate(ev)
        con = ev.store.con
        out = _keys(con, {"items": "SELECT key FROM eval_items", "calls": "SELECT key FROM calls"})
        used = {k for (ks,) in con.execute("SELECT call_keys FROM eval_items") for k in json.loads(ks)}
    finally:
        ev.close()
    assert sorted(used) == out["calls"]
    return out


def test_data_run_keys_are_unchanged(tmp_path):
    assert run_keys(tmp_path / "json", local=False) == PINNED["run_json"]
    assert run_keys(tmp_path / "geval", local=True) == PINNED["run_geval"]


def test_evaluation_keys_are_unchanged(tmp_path):
    assert eval_keys(tmp_path / "json", local=False) == PINNED["eval_json"]
    assert eval_keys(tmp_path / "lencap", local=False, mode="length_cap") == PINNED["eval_lencap"]
    assert eval_keys(tmp_path / "local", local=True) == PINNED["eval_local"]


def test_fingerprints_and_call_key_are_unchanged():
    obj = {"speech": "café — “x”", "n": [1, 2.5, None]}
    assert RUN_KEYS(obj) == "ff1d4b8dfc979d87"
    assert EVAL_KEYS(obj) == "7a7a869e4684b9b575411987"
    req = ChatRequest.chat("m", [{"role": "user", "content": "héllo"}], sampling=Sampling(0.7), tag="t")
    assert cache_key({"type": "x"}, req) == "246acb21bf1f0363a8e8fac5f3610760"


PINNED: dict[str, dict[str, list[str]]] = {
    "run_json": {
        "responses": ["34bbc649f34a8be6", "92d1f6a390b37c36", "f40f49d00c264193"],
        "judges": ["b386e8c7b565f13d"],
        # the pair plan keys the settings that shape a pair set: the safety and flag vetoes and the weights (pair
        # rows are rebuilt from stored judgments at no cost, so a new plan key orphans nothing paid for)
        "pairs": ["b386e8c7b565f13d:8f2ca033e6fb20cd:none"],
        "calls": [
            "16646658080da969364815f18ba36fbf", "1ce382230365e162582f90b5b23ca87e",
            "7a3b24bd094df572a3fe8d27f791682d", "9f3a9aa8d6293ba5f9c1138e2368df1c",
            "d0a6959c85ddfacebd1be223c9b378c0", "d7b8399e464210fd29f2d245424ed568",
        ],
    },
    "run_geval": {
        "responses": ["04e0eac4ac4bd552", "7ac7425b3e2c3f15", "e82bb22cbce6a104"],
        "judges": ["702da32d79a9faa1"],
        "pairs": ["702da32d79a9faa1:8f2ca033e6fb20cd:zscore"],  # as above: the vetoes and the weights
        "calls": [
            "16646658080da969364815f18ba36fbf", "7a3b24bd094df572a3fe8d27f791682d", "cf86a66f5539c3a9",
            "d0a6959c85ddfacebd1be223c9b378c0", "d72e94256567a27a",
        ],
    },
    "eval_json": {
        "items": [
            "gen:54f9334c4af3414f87114420", "gen:6412347cbb35b239cf8a3b53", "gen:98b4c772fba9d5b189105e61",
            "gen:d09b5a69e1cd6a42ac2cffc3", "score:721cccb9081e5b3e606be7fb", "score:a31935e6041617708c1db1fb",
            "score:e6e5f41bda780f5876286306", "score:f3ddd63b25765c5cf9448a05", "verdict:082356d90ffc58af03231433",
            "verdict:2f84ef7e6c543ed096c31225", "verdict:9874764e2cad30df1e95d113",
            "verdict:9af3e8447994ab0a2f8298b1",
        ],
        "calls": [
            "04f3addcb964f4a5c7f32699f944333f", "1ce382230365e162582f90b5b23ca87e",
            "2012499e84b5951179463e4beffc9af5", "2da544eb204eb64d87307a36a2e05794",
            "69d1b0f110ee66a780b6d0df141e3220", "779036215bc13696429c5938edc6c74b",
            "83c69db5735fc1e0a744241c14478947", "9b92ef2f18d0702289ba06f5e3c39e73",
            "9f3a9aa8d6293ba5f9c1138e2368df1c", "a9ba324ddb6c8e9ecc52f1aeb03a5b0e",
            "b22df706d8a342e6d31e1e8df40bf664", "c19f8b2909e4334c02d949050fa19156",
            "c7a98c3c3fa2b967cb63fa8670425c43", "d7b8399e464210fd29f2d245424ed568",
            "ea79ca6015e4ffe329b88e247de17baf", "efdd3c6f7e44b3e318d857a2dcaf87ef",
        ],
    },
    "eval_lencap": {
        "items": [
            "gen:77dbc69d473ca813ba7c0a47", "gen:bdca341f6c02e10d1e85f7c2", "gen:e90c274c3d69cb45f4e4ac37",
            "gen:f89d268f4e512a2d0c758d62", "score:721cccb9081e5b3e606be7fb", "score:a31935e6041617708c1db1fb",
            "score:e6e5f41bda780f5876286306", "score:f3ddd63b25765c5cf9448a05", "verdict:082356d90ffc58af03231433",
            "verdict:2f84ef7e6c543ed096c31225", "verdict:9874764e2cad30df1e95d113",
            "verdict:9af3e8447994ab0a2f8298b1",
        ],
        "calls": [
            "04f3addcb964f4a5c7f32699f944333f", "15bd1e4a83aa11a4201049cc730979ad",
            "1ce382230365e162582f90b5b23ca87e", "2da544eb204eb64d87307a36a2e05794",
            "69d1b0f110ee66a780b6d0df141e3220", "6dd55f5d5dad71efeb0f40342a0d41c2",
            "779036215bc13696429c5938edc6c74b", "829382e3cc8b260fca59a49db6255097",
            "83c69db5735fc1e0a744241c14478947", "9f3a9aa8d6293ba5f9c1138e2368df1c",
            "a9ba324ddb6c8e9ecc52f1aeb03a5b0e", "b2ac64e1a958659b7d5ac6cd04ef5acd",
            "c7a98c3c3fa2b967cb63fa8670425c43", "d7b8399e464210fd29f2d245424ed568",
            "ea79ca6015e4ffe329b88e247de17baf", "efdd3c6f7e44b3e318d857a2dcaf87ef",
        ],
    },
    "eval_local": {
        "items": [
            "gen:20c5846a3ca30a22b341c560", "gen:a5a9e7b2c49fb0df4226ca3a", "gen:ada2035679e0365e0eeac445",
            "gen:ae6a12c4296353e93984945f", "score:105d09393bf3f4df9b39eb36", "score:14c01205745fbd31dafbf0b2",
            "score:5539b9a5f022b34a54ea79c9", "score:d1fccd61fa459cc030f2dfc3", "verdict:0e75ddce7a2abe5218ab21cb",
            "verdict:1b03f46afba62dc7451fdd8d", "verdict:cd5f502c3b1fa4aadea3e9e0",
            "verdict:ea5055810127ac82d8a80b60",
        ],
        "calls": [
            "12806388f7758909f5ff396e", "199afd1bf9b67edd8b62e976", "2012499e84b5951179463e4beffc9af5",
            "9b92ef2f18d0702289ba06f5e3c39e73", "b22df706d8a342e6d31e1e8df40bf664", "be23ad9b36eef4db9efc5a3f",
            "c19f8b2909e4334c02d949050fa19156", "c46a131dc9341cfff5d5a5c7", "cb5a9c46c10b2ab2fa7a782c",
            "d993213e3a1cdd4879d58036", "f11e93ad9a4cc81bf544baaf", "f145af2cfa3f4e2c631899f5",
        ],
    },
}
