"""One evaluation folder: the session (store, item keys, budget, speeches) the stages and the report share.

``<out_dir>/eval.sqlite`` holds the call cache (the pipeline's ``calls`` table) and one row per finished
item in ``eval_items``: a generation, a verdict or a score set, keyed by a hash of everything that shapes
it, so a rerun finds what is done and a changed judge or side never reuses an old answer. This module
knows those keys and reads the items back (``responses``, ``judge_plan``, ``collect``); ``stages.py``
makes the calls, ``report.py`` writes the outputs and ``evaluate.py`` runs it all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from ..backends.base import ChatRequest
from ..dataset.generate import therapist_request
from ..dataset.session import EVAL_KEYS, CallBudget, Session
from ..dataset.validate import TRUNCATED, check_reply
from ..rubric.score import check_weights
from ..runner import StageProgress
from ..store import Writer
from .config import EvalConfig, SideConfig
from .data import load_speech_set, read_responses_file
from .results import ORDERS, SIDES

ITEMS_SQL = """CREATE TABLE IF NOT EXISTS eval_items (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, value TEXT, error TEXT,
    attempts INTEGER NOT NULL, call_keys TEXT, updated_at REAL NOT NULL)"""
# SQLite's default bound on host parameters is 999: item look-ups go in slices below it.
LOOKUP_SLICE = 900


class ItemRow(NamedTuple):
    """One ``eval_items`` row, in column order (what the writer inserts)."""

    key: str
    kind: str  # gen | verdict | score
    status: str  # ok | failed
    value: str | None  # JSON: {"text", ...} | {"winner", "rationale"} | {"scores", "rationale"}
    error: str | None
    attempts: int
    call_keys: str  # JSON list
    updated_at: float


class StoredItem(NamedTuple):
    """What the session reads of an item (``value`` decoded)."""

    status: str
    value: Any
    error: str | None
    attempts: int


class SideState(NamedTuple):
    """A side's response to one speech: ok / failed / pending / missing (a responses file without it)."""

    status: str
    value: Any  # the text (a file side) or the stored generation ({"text", "completion_tokens", ...})
    error: str | None

    @property
    def text(self) -> str | None:
        if self.status != "ok":
            return None
        return self.value if isinstance(self.value, str) else self.value["text"]


class EvalWriter(Writer):
    SQL = {**Writer.SQL, "eval_items": "INSERT OR REPLACE INTO eval_items VALUES (?,?,?,?,?,?,?,?)"}


class Evaluation(Session):
    """One evaluation folder: config, store, prompts, speeches, the sides' response files, and the keys."""

    cfg: EvalConfig

    def __init__(self, cfg: EvalConfig, base_dir: Path = Path("."), progress: StageProgress | None = None,
                 budget: CallBudget | None = None):
        folder = Path(cfg.out_dir)
        if cfg.mode == "length_cap" and not folder.name.endswith("lencap"):
            # its own folder: `-o mode=length_cap` must not overwrite the standard evaluation's results
            # (nothing is lost: a capped generation and its verdicts never share a cache key with uncapped ones)
            folder = folder.with_name(folder.name + "-lencap")
        super().__init__(cfg, folder, "eval.sqlite", base_dir=base_dir,
                         progress=progress or StageProgress(enabled=False), budget=budget or CallBudget(),
                         keys=EVAL_KEYS)
        self.store.con.execute(ITEMS_SQL)
        self.therapist_prompt = self.prompt(cfg.therapist_prompt)
        self.pairwise_prompt = self.prompt(cfg.pairwise.prompt or "pairwise_v1")
        self.score_prompt = self.prompt(cfg.scores.prompt) if cfg.scores else None  # type: ignore[arg-type]
        if cfg.scores is not None and cfg.scores.weights is not None:  # a principles file is known only now
            check_weights(cfg.scores.weights, self.principles.keys, "scores.weights")
        self.speeches = load_speech_set(cfg, self.base_dir)
        self.files = {s: read_responses_file(c, self.base_dir) for s, c in self.sides() if c.responses}
        self._fps: dict[str, str] = {}  # judge fingerprints, computed once per run
        self._gen_keys: dict[tuple[str, str], str] = {}
        self.on_done: Callable[[], None] = lambda: None  # the judge stages point it at their progress bar
        self.counts: dict[str, int] = {}

    def sides(self) -> list[tuple[str, SideConfig]]:
        return [("policy", self.cfg.policy), ("reference", self.cfg.reference)]

    # -- keys ---------------------------------------------------------------------------------------------
    def gen_request(self, side: SideConfig, speech: str) -> ChatRequest:
        return therapist_request(speech, model=side.model or "", system_prompt=side.system_prompt,
                                 sampling=side.sampling, prompt=self.therapist_prompt, fingerprint=self.fingerprint,
                                 cap=self.cfg.length_cap if self.cfg.mode == "length_cap" else None, tidy=True)

    def gen_key(self, side: SideConfig, speech: str) -> str:
        memo = self._gen_keys.get((side.name, speech))
        if memo is None:
            req = self.gen_request(side, speech)
            s = req.sampling
            memo = self._gen_keys[side.name, speech] = "gen:" + self.fingerprint({
                "b": self.identity(side.backend or "", req.model), "m": req.model, "msgs": req.messages,
                "s": [s.temperature, s.top_p, s.max_tokens, s.seed]})
        return memo

    def pairwise_fingerprint(self) -> str:
        if "pairwise" not in self._fps:
            pc = self.cfg.pairwise
            self._fps["pairwise"] = self.fingerprint({
                "b": self.identity(pc.backend, pc.model), "m": pc.model, "mode": pc.mode,
                "prompt": self.pairwise_prompt.version, "principles": self.principles.version,
                "s": pc.sampling.model_dump(), "n": pc.max_attempts, "tie": pc.tie_margin})
        return self._fps["pairwise"]

    def verdict_key(self, speech: str, a: str, b: str) -> str:
        return "verdict:" + self.fingerprint([self.pairwise_fingerprint(), speech, a, b])

    def score_fingerprint(self) -> str:
        if "score" not in self._fps:
            sc = self.cfg.scores
            assert sc is not None and self.score_prompt is not None
            self._fps["score"] = self.fingerprint({
                "b": self.identity(sc.backend, sc.model), "m": sc.model, "mode": sc.mode,
                "prompt": self.score_prompt.version, "principles": self.principles.version,
                "s": sc.sampling.model_dump(), "n": sc.max_attempts})
        return self._fps["score"]

    def score_key(self, speech: str, response: str) -> str:
        return "score:" + self.fingerprint([self.score_fingerprint(), speech, response])

    # -- reading the store --------------------------------------------------------------------------------
    def items(self, keys: list[str]) -> dict[str, StoredItem]:
        """The stored items among ``keys``."""
        out: dict[str, StoredItem] = {}
        for i in range(0, len(keys), LOOKUP_SLICE):
            part = keys[i:i + LOOKUP_SLICE]
            q = f"SELECT key, status, value, error, attempts FROM eval_items WHERE key IN ({','.join('?' * len(part))})"
            for k, st, v, e, a in self.store.con.execute(q, part):
                out[k] = StoredItem(st, json.loads(v) if v else None, e, a)
        return out

    def responses(self) -> dict[str, dict[str, SideState]]:
        """side -> speech id -> its response's state. A file's response passes the checks a generated one
        does (``validate.check_reply``; it has no finish reason, so it is never "truncated")."""
        out: dict[str, dict[str, SideState]] = {}
        for side, c in self.sides():
            if c.responses:
                f = self.files[side]
                out[side] = {sid: self._file_state(f.get(sid), speech) for sid, speech in self.speeches}
                continue
            keys = {sid: self.gen_key(c, text) for sid, text in self.speeches}
            stored = self.items(list(keys.values()))
            out[side] = {}
            for sid, k in keys.items():
                it = stored.get(k)
                out[side][sid] = SideState("pending", None, None) if it is None else SideState(it.status, it.value,
                                                                                               it.error)
        return out

    def _file_state(self, text: str | None, speech: str) -> SideState:
        if not text:
            return SideState("missing", None, "no response in the file")
        check = check_reply(text, speech=speech, system=None, finish=None, completion_tokens=None, max_tokens=0,
                            rules=self.cfg.replies)
        return SideState("ok", text, None) if check.ok else SideState("failed", None, check.problem)

    def judge_plan(self, resp: dict[str, dict[str, SideState]], kind: str, chunk: int = 500) -> Iterator[tuple]:
        """Pending items of one kind, lazily: verdicts as (key, speech id, order, speech, text A, text B),
        scores as (key, speech id, side, speech, text). One store query per ``chunk`` speeches, so the first
        call goes out at once and memory stays flat. Items stored ok are counted in
        ``counts[kind + "s_done_before"]`` and reported to ``on_done`` (the progress bar).

        A stored failure is planned again: its calls replay from the cache for free, so only a raised
        ``max_attempts`` (or a changed judge) pays anything.
        """
        done_key = f"{kind}s_done_before"
        self.counts[done_key] = 0
        for i in range(0, len(self.speeches), chunk):
            items: list[tuple] = []
            for sid, speech in self.speeches[i:i + chunk]:
                texts = {side: resp[side][sid].text for side in SIDES}
                if kind == "verdict" and texts["policy"] and texts["reference"]:
                    pt, rt = texts["policy"], texts["reference"]
                    items.append((self.verdict_key(speech, pt, rt), sid, "policy_first", speech, pt, rt))
                    items.append((self.verdict_key(speech, rt, pt), sid, "reference_first", speech, rt, pt))
                elif kind == "score" and self.cfg.scores is not None:
                    items += [(self.score_key(speech, t), sid, side, speech, t) for side, t in texts.items() if t]
            stored = self.items([it[0] for it in items])
            for it in items:
                got = stored.get(it[0])
                if got is not None and got.status == "ok":
                    self.counts[done_key] += 1
                    self.on_done()
                else:
                    yield it

    def planned(self, resp: dict[str, dict[str, SideState]], kind: str) -> int:
        """How many items of ``kind`` the plan holds (done or not): the progress bar's total."""
        texts = [[resp[side][sid].text for side in SIDES] for sid, _ in self.speeches]
        if kind == "verdict":
            return 2 * sum(all(t) for t in texts)
        return sum(bool(x) for t in texts for x in t) if self.cfg.scores is not None else 0

    def collect(self) -> list[dict[str, Any]]:
        """One record per speech with everything stored for it: responses, both verdicts, both score sets."""
        resp = self.responses()
        rows: list[dict[str, Any]] = []
        keys: list[str] = []
        for sid, speech in self.speeches:
            row: dict[str, Any] = {"speech_id": sid, "speech": speech}
            texts = {}
            for side in SIDES:
                st = resp[side][sid]
                texts[side] = st.value if isinstance(st.value, str) else (st.value or {}).get("text")
                gen = st.value if isinstance(st.value, dict) else {}
                cut = bool(gen.get("truncated")) or bool(st.error and st.error.startswith(TRUNCATED))
                row[side] = {"status": st.status, "text": texts[side], "error": st.error,
                             "completion_tokens": gen.get("completion_tokens"),
                             "finish_reason": gen.get("finish_reason"), "truncated": cut}
            if texts["policy"] and texts["reference"]:
                row["_vk"] = {"policy_first": self.verdict_key(speech, texts["policy"], texts["reference"]),
                              "reference_first": self.verdict_key(speech, texts["reference"], texts["policy"])}
            if self.cfg.scores is not None:
                row["_sk"] = {s: self.score_key(speech, texts[s]) for s in SIDES if texts[s]}
            rows.append(row)
            keys += list(row.get("_vk", {}).values()) + list(row.get("_sk", {}).values())
        stored = self.items(keys)
        for row in rows:
            vk, sk = row.pop("_vk", {}), row.pop("_sk", {})
            for order in ORDERS:
                it = stored.get(vk[order]) if order in vk else None
                row[order] = _item(it) | ({"verdict": (it.value or {}).get("winner"),
                                           "rationale": (it.value or {}).get("rationale", "")} if it else {})
            for side in SIDES:
                it = stored.get(sk[side]) if side in sk else None
                row[side]["scores"] = (it.value or {}).get("scores") if it and it.status == "ok" else None
                row[side]["score_status"] = _item(it)["status"] if side in sk else "none"
                row[side]["score_error"] = it.error if it else None
        return rows


def _item(it: StoredItem | None) -> dict[str, Any]:
    if it is None:
        return {"status": "pending", "error": None, "attempts": 0}
    return {"status": it.status, "error": it.error, "attempts": it.attempts}
