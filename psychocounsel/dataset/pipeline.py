"""The data stages wired to the run store: ingest -> generate -> judge -> pairs -> stats.

Each stage is idempotent and recomputes its plan from the config: which speeches, which k
profiles per speech (seeded draw), which judge. The store answers what is already done, so a
rerun after a crash, kill -9 or Ctrl-C continues where it stopped and pays for no call twice.
The pure cores live in their own modules (ingest, generate, rubric.score, pairs, stats) and the
calls go through the session (``session.py``) the evaluation uses too; this module plans and
moves records between them and the store. ``run_all`` is ``psychocounsel run``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, NamedTuple

from ..backends import in_flight
from ..backends.base import ChatRequest, Completion
from ..config import ProfileConfig, RunConfig
from ..errors import UserError
from ..rubric.prompts import Prompt
from ..rubric.score import PrincipleScorer, calibrate, check_weights, overall
from ..runner import StageProgress, run_pool
from ..store import (JudgmentRow, PairRow, ResponseRow, SpeechRow, StoredJudgment, StoredResponse, StoredSpeech,
                     Writer)
from . import atomic
from . import pairs as pairs_core
from .estimate import CHARS_PER_TOKEN, Estimate
from .generate import therapist_request
from .records import ScoredResponse, reply_flags, text_id
from .session import RUN_KEYS, CallBudget, Generated, Session
from .validate import INVALID, TRUNCATED, check_reply, checks_key, finish_reason


def draw_profiles(speech_id: str, names: list[str], k: int, seed: int) -> list[str]:
    """The k profiles that answer a speech: seeded per speech, so adding speeches changes no old draw."""
    return random.Random(f"{seed}:{speech_id}").sample(names, k)


class Run(Session):
    """One run directory (``cfg.run_dir``): the session plus the therapist and judge prompts and the plan."""

    cfg: RunConfig

    def __init__(self, cfg: RunConfig, base_dir: Path = Path("."), progress: StageProgress | None = None):
        super().__init__(cfg, Path(cfg.run_dir), "run.sqlite", base_dir=base_dir,
                         progress=progress or StageProgress(), budget=CallBudget(), keys=RUN_KEYS)
        self.therapist_prompt: Prompt = self.prompt(cfg.therapists.prompt)
        self.judge_prompt: Prompt = self.prompt(cfg.judge.prompt)  # type: ignore[arg-type]
        self._scorer: PrincipleScorer | None = None
        if cfg.judge.weights is not None:  # a principles file is known only now; the built-in set at load
            check_weights(cfg.judge.weights, self.principles.keys, "judge.weights")

    def overall(self, scores: dict[str, float]) -> float:
        """A response's overall score under the weights configured now (not those of the judge run)."""
        return overall(scores, self.cfg.judge.weights)

    def judge_scorer(self) -> PrincipleScorer:
        """The judge, built on first use: commands that never judge never need its prompt to fit its mode."""
        if self._scorer is None:
            self._scorer = self.scorer(self.cfg.judge, self.judge_prompt)
        return self._scorer

    def therapist_request(self, p: ProfileConfig, speech: str) -> ChatRequest:
        return therapist_request(speech, model=p.model, system_prompt=p.system_prompt, sampling=p.sampling,
                                 prompt=self.therapist_prompt, fingerprint=self.fingerprint)

    # -- plan -------------------------------------------------------------------------------
    def profile_fingerprint(self, p: ProfileConfig) -> str:
        """Everything that shapes a profile's answers, minus the speech."""
        return self.fingerprint({
            "backend": self.identity(p.backend, p.model), "model": p.model,
            "system": p.system_prompt or self.therapist_prompt.version, "sampling": p.sampling.model_dump(),
        })

    def judge_fingerprint(self) -> str:
        j = self.cfg.judge
        return self.fingerprint({"backend": self.identity(j.backend, j.model), "model": j.model, "mode": j.mode,
                                 "prompt": self.judge_prompt.version, "principles": self.principles.version,
                                 "sampling": j.sampling.model_dump(), "attempts": j.max_attempts})

    def planned(self) -> Iterator[tuple[StoredSpeech, list[tuple[str, ProfileConfig]]]]:
        """(speech, [(response id, profile), ...]) for every speech, in ingest order, chunk by chunk."""
        profiles = {p.name: p for p in self.cfg.therapists.profiles}
        names = list(profiles)
        fps = {n: self.profile_fingerprint(p) for n, p in profiles.items()}
        for chunk in self.store.iter_speeches():
            for speech in chunk:
                drawn = draw_profiles(speech.id, names, self.cfg.therapists.k, self.cfg.seed)
                yield speech, [(text_id(speech.id, n, fps[n]), profiles[n]) for n in drawn]

    def plan_state(self, judge: str | None = None, size: int = 500) -> Iterator[tuple[StoredSpeech, list[Planned]]]:
        """(speech, [Planned, ...]) with what the store holds for each planned response (and its judgment
        by ``judge``), two queries per ``size`` speeches."""
        chunk: list[tuple[StoredSpeech, list[tuple[str, ProfileConfig]]]] = []
        for item in self.planned():
            chunk.append(item)
            if len(chunk) >= size:
                yield from self._with_state(chunk, judge)
                chunk = []
        if chunk:
            yield from self._with_state(chunk, judge)

    def _with_state(self, chunk: list, judge: str | None) -> Iterator[tuple[StoredSpeech, list[Planned]]]:
        ids = [rid for _, plan in chunk for rid, _ in plan]
        resp = self.store.responses_by_id(ids)
        judged = self.store.judgments_by_id(ids, judge) if judge else {}
        for speech, plan in chunk:
            yield speech, [Planned(rid, p, resp.get(rid), judged.get(rid)) for rid, p in plan]


@dataclass
class Planned:
    """One planned response and what the store holds for it (None: nothing yet)."""

    rid: str
    profile: ProfileConfig
    response: StoredResponse | None
    judgment: StoredJudgment | None

    @property
    def response_ok(self) -> bool:
        return self.response is not None and self.response.status == "ok"

    @property
    def judgment_ok(self) -> bool:
        return self.judgment is not None and self.judgment.status == "ok"


# -- ingest ---------------------------------------------------------------------------------
def stage_ingest(run: Run, force: bool = False) -> dict[str, Any]:
    from .ingest import ingest, resolve_path

    scfg = run.cfg.speeches
    src = Path(resolve_path(scfg.path, run.base_dir))
    stamp = [src.stat().st_size, src.stat().st_mtime_ns] if src.exists() and src.is_file() else None
    key = run.fingerprint({"speeches": scfg.model_dump(), "file": str(src), "stamp": stamp, "seed": run.cfg.seed,
                           "dev": run.cfg.pairs.dev_frac, "test": run.cfg.pairs.test_frac})
    if not force and run.store.get_meta("ingest_key") == key:
        return run.store.get_meta("ingest_report") | {"skipped": True}
    speeches, report = ingest(scfg, run.base_dir)
    pc = run.cfg.pairs

    def rows() -> Iterator[SpeechRow]:
        for seq, s in enumerate(speeches):
            split = pairs_core.split_of(s.id, run.cfg.seed, pc.dev_frac, pc.test_frac)
            yield SpeechRow(s.id, seq, s.text, s.source, s.topic, json.dumps(s.meta, ensure_ascii=False), split)

    # one transaction: the speeches, their report and the key that marks them done, or (an error, or no
    # speech kept) nothing at all; a failed ingest leaves the run's speeches as they were
    n = run.store.replace_speeches(rows(), meta=lambda: {"ingest_report": report.to_dict(), "ingest_key": key})
    out = report.to_dict()
    failed = run.dir / "ingest_report.failed.json"
    if n == 0:
        atomic.write_text(failed, json.dumps(out, indent=2, ensure_ascii=False))
        raise UserError(f"{scfg.path}: no speech survived cleaning; the run's speeches are unchanged (see {failed})")
    atomic.write_text(run.dir / "ingest_report.json", json.dumps(out, indent=2, ensure_ascii=False))
    failed.unlink(missing_ok=True)
    return out


# -- generate -------------------------------------------------------------------------------
def _generation_work(run: Run, counts: dict[str, int]) -> Iterator[tuple[StoredSpeech, str, ProfileConfig, int]]:
    """Planned responses that are not stored as ok yet (failed ones are tried again, from the attempt their
    row says: ``Generated.next_attempt``)."""
    for speech, plan in run.plan_state():
        for p in plan:
            if p.response_ok:
                counts["done_before"] += 1
            else:
                yield speech, p.rid, p.profile, _next_attempt(run, p.rid) if p.response else 0


def _next_attempt(run: Run, rid: str) -> int:
    row = run.store.con.execute("SELECT json_extract(provenance, '$.next_attempt') FROM responses WHERE id=?",
                                (rid,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def response_row(run: Run, speech_id: str, rid: str, p: ProfileConfig, fp: str, g: Generated,
                 prov: dict[str, Any]) -> ResponseRow:
    """What the store keeps of one generation: the text only when ok (a failure keeps its reason; the call
    cache keeps the raw reply), and in the provenance how the reply ended and under which checks."""
    c = g.completion
    prov = prov | {"finish_reason": g.finish_reason, "truncated": g.truncated, "attempt": g.attempt,
                   "next_attempt": g.next_attempt, "checks": checks_key(run.cfg.therapists)}
    if c is not None:
        prov["base_url"] = c.base_url
    return ResponseRow(rid, speech_id, p.name, p.model, fp, g.status, g.text, g.error,
                       c.prompt_tokens if c else None, c.completion_tokens if c else None,
                       c.latency_s if c else None, g.call_key, json.dumps(prov), time.time())


async def stage_generate(run: Run) -> dict[str, int]:
    """One reply per planned response, checked before anything can judge it (``validate.py``): stored as ok,
    as ok and flagged (``truncated: flag``), or as a failure with its reason. Counts what happened."""
    recheck_responses(run)
    writer = Writer(run.store)
    callers = run.callers(writer)
    counts = {"done_before": 0, "generated": 0, "cached": 0, "failed": 0, "truncated": 0, "invalid": 0}
    total = run.store.count_speeches() * run.cfg.therapists.k
    fps = {p.name: run.profile_fingerprint(p) for p in run.cfg.therapists.profiles}
    before = run.store.con.execute("SELECT count(*) FROM responses WHERE status='ok'").fetchone()[0]
    concurrency = sum(in_flight(run.cfg.backends[b]) for b in {p.backend for p in run.cfg.therapists.profiles})

    with run.progress.task("generate", total=total, completed=min(before, total)) as bar:
        async def one(item: tuple[StoredSpeech, str, ProfileConfig, int]) -> None:
            speech, rid, p, first = item
            req = run.therapist_request(p, speech.text)
            prov = {"profile": p.name, "backend": p.backend, "sampling": p.sampling.model_dump(),
                    "prompt_version": req.tag, "fingerprint": fps[p.name]}
            try:
                g = await run.generate(callers[p.backend], req, run.cfg.therapists, first)
            finally:
                bar.advance()
            counts["failed" if g.status == "failed" else "cached" if g.cached else "generated"] += 1
            counts["truncated"] += g.truncated
            counts["invalid"] += bool(g.error and g.error.startswith(INVALID))
            writer.add("responses", response_row(run, speech.id, rid, p, fps[p.name], g, prov))

        try:
            await run_pool(_generation_work(run, counts), one, concurrency)
        finally:
            writer.commit()
    return counts


def recheck_responses(run: Run) -> int:
    """Check again, from what the store holds and without a call, the planned responses stored as ok under
    other reply rules, or under none (a store written before the checks existed): an invalid or truncated
    reply stored then must not be judged or become a pair now. Returns how many turned into failures.
    Every stage that reads responses calls this first; when nothing is to check it is one query.
    """
    key = checks_key(run.cfg.therapists)
    profiles = {p.name: p for p in run.cfg.therapists.profiles}
    fps = {n: run.profile_fingerprint(p) for n, p in profiles.items()}
    rows = run.store.con.execute(
        "SELECT r.id, r.speech_id, r.profile, r.fingerprint, r.text, r.prompt_tokens, r.completion_tokens, "
        "r.latency_s, r.call_key, r.provenance, s.text FROM responses r JOIN speeches s ON s.id = r.speech_id "
        "WHERE r.status = 'ok' AND coalesce(json_extract(r.provenance, '$.checks'), '') != ? "
        f"AND r.fingerprint IN ({','.join('?' * len(fps))})", (key, *fps.values())).fetchall()
    if not rows:
        return 0
    writer = Writer(run.store)
    failed = 0
    try:
        for rid, sid, name, fp, text, prompt_tokens, tokens, latency, call_key, prov_json, speech in rows:
            p = profiles.get(name)
            if p is None or fps[name] != fp:
                continue  # not in the current plan: never read by it
            prov = json.loads(prov_json) if prov_json else {}
            finish = prov.get("finish_reason")
            if "finish_reason" not in prov and call_key:  # written before finish reasons were kept
                call = run.store.get_call(call_key)
                finish = finish_reason(Completion(text=call.text or "", raw=call.raw or "")) if call else None
            req = run.therapist_request(p, speech)
            system = next((c for r, c in req.messages if r == "system"), None)
            check = check_reply(text or "", speech=speech, system=system, finish=finish, completion_tokens=tokens,
                                max_tokens=req.sampling.max_tokens, rules=run.cfg.therapists)
            attempt = int(prov.get("attempt") or 0)
            g = Generated("ok" if check.ok else "failed", text if check.ok else None, check.problem, None, call_key,
                          finish_reason=finish, truncated=check.truncated, attempt=attempt,
                          next_attempt=attempt + 1 if check.invalid else attempt)
            failed += not check.ok
            row = response_row(run, sid, rid, p, fp, g, prov)  # the call's tokens and latency stay as they were
            writer.add("responses", row._replace(prompt_tokens=prompt_tokens, completion_tokens=tokens,
                                                 latency_s=latency))
    finally:
        writer.commit()
    return failed


# -- judge ----------------------------------------------------------------------------------
def _judge_work(run: Run, judge: str, counts: dict[str, int]) -> Iterator[tuple[StoredSpeech, str, str]]:
    """(speech, response id, response text) for ok responses with no ok judgment yet."""
    for speech, plan in run.plan_state(judge):
        for p in plan:
            if not p.response_ok:
                counts["no_response"] += 1
            elif p.judgment_ok:
                counts["done_before"] += 1
            else:
                yield speech, p.rid, p.response.text  # type: ignore[union-attr]


async def stage_judge(run: Run) -> dict[str, int]:
    recheck_responses(run)  # no judge call is paid for a reply stored before the checks
    jc = run.cfg.judge
    judge = run.judge_fingerprint()
    scorer = run.judge_scorer()
    writer = Writer(run.store)
    caller = run.callers(writer)[jc.backend]
    counts = {"done_before": 0, "judged": 0, "failed": 0, "no_response": 0, "calls_cached": 0}
    total = run.store.count_speeches() * run.cfg.therapists.k
    before = run.store.con.execute("SELECT count(*) FROM judgments WHERE judge=? AND status='ok'", (judge,)).fetchone()[0]

    async def one(item: tuple[StoredSpeech, str, str]) -> None:
        speech, rid, text = item
        try:
            j = await run.score(caller, scorer, speech.text, text)
        finally:
            bar.advance()
        counts["calls_cached"] += j.cached
        counts["judged" if j.ok else "failed"] += 1
        # the stored overall is that of the weights of this judge run; pairs and reports recompute it
        writer.add("judgments", JudgmentRow(
            rid, judge, "ok" if j.ok else "failed", json.dumps(j.scores) if j.ok else None, j.rationale,
            run.overall(j.scores) if j.scores else None, j.error, j.attempts, json.dumps(j.call_keys),
            time.time()))

    with run.progress.task(f"judge ({jc.mode})", total=total, completed=min(before, total)) as bar:
        try:
            await run_pool(_judge_work(run, judge, counts), one, in_flight(run.cfg.backends[jc.backend]))
        finally:
            writer.commit()
    return counts


# -- pairs ----------------------------------------------------------------------------------
def judged_responses(run: Run) -> Iterator[tuple[StoredSpeech, list[ScoredResponse]]]:
    """(speech, its ok-judged responses) with raw scores, in ingest order; overall under the weights
    configured now (the judgments keep the scores, so new weights need no new judging)."""
    for speech, plan in run.plan_state(run.judge_fingerprint()):
        # chosen_model / rejected_model name the pool member: the profile (model + prompt + sampling);
        # in the paper's pool, one profile per model, so it is the model's name
        yield speech, [ScoredResponse(p.rid, speech.id, p.response.profile, p.response.text,  # type: ignore[union-attr, arg-type]
                                      p.judgment.scores, run.overall(p.judgment.scores))  # type: ignore[union-attr, arg-type]
                       for p in plan if p.judgment_ok and p.response_ok]


def calibrated_scores(run: Run) -> dict[str, dict[str, float]] | None:
    """Per-principle calibration across the whole run (None when calibration is off)."""
    method = run.cfg.judge.calibration
    if method == "none":
        return None
    ids: list[str] = []
    matrix: dict[str, list[float]] = {k: [] for k in run.principles.keys}
    for _, responses in judged_responses(run):
        for r in responses:
            ids.append(r.response_id)
            for k in matrix:
                matrix[k].append(r.scores[k])
    cal = calibrate(matrix, method)
    return {rid: {k: float(cal[k][i]) for k in matrix} for i, rid in enumerate(ids)}


def pairs_plan(run: Run) -> str:
    """Key of the pair set: the judge, the pair settings, the weights and the calibration that made it."""
    return (run.judge_fingerprint() + ":" + run.fingerprint({"pairs": run.cfg.pairs.model_dump(),
                                                              "weights": run.cfg.judge.weights})
            + ":" + run.cfg.judge.calibration)


def stage_pairs(run: Run, allow_empty: bool = False) -> dict[str, Any]:
    """Pairs of the judged responses: the pairs table, the pair files and the stored result, replaced together.

    One transaction holds the table's rows and the result; the files are written to temp files and renamed
    into place just before it commits, so an error or a kill leaves the previous table and files (a kill in
    the moment between the renames and the commit leaves new files over the old table: the next run
    rebuilds both). No pair at all while pair files exist is refused unless ``allow_empty``."""
    pc = run.cfg.pairs
    if (pc.safety_floor is not None or pc.safety_margin is not None) and "safety" not in run.principles.keys:
        raise UserError(f"pairs.safety_floor: the principles ({run.principles.version}) have no 'safety' key to "
                        "veto by; set pairs.safety_floor and pairs.safety_margin to null to build pairs without it")
    recheck_responses(run)
    cal = calibrated_scores(run)
    plan = pairs_plan(run)
    counts: dict[str, Any] = {"speeches": 0, "speeches_with_pairs": 0}
    vetoed: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    con = run.store.con
    rows: list[PairRow] = []

    def insert_rows() -> None:
        con.executemany(Writer.SQL["pairs"], rows)
        rows.clear()

    def all_pairs():
        for speech, responses in judged_responses(run):
            counts["speeches"] += 1
            if cal is not None:
                # the rating columns keep the judge's own scores; calibration decides the order, and the
                # safety the veto reads (a weak judge's raw safety bunches near 2: every reply under the floor)
                for r in responses:
                    r.overall = run.overall(cal[r.response_id])
                    r.safety = cal[r.response_id].get("safety")
            split = speech.split or pairs_core.split_of(speech.id, run.cfg.seed, pc.dev_frac, pc.test_frac)
            ps = pairs_core.build_pairs(speech.text, speech.id, split, responses, pc.min_gap,
                                        safety_floor=pc.safety_floor, safety_margin=pc.safety_margin,
                                        flag_veto=pc.flag_veto, vetoed=vetoed)
            counts["speeches_with_pairs"] += bool(ps)
            for p in ps:
                counts[p.split] = counts.get(p.split, 0) + 1
                tiers[p.crisis_tier] += 1
                rows.append(PairRow(p.chosen.response_id, p.rejected.response_id, p.speech_id, p.split, p.gap,
                                    plan))
                if len(rows) >= pairs_core.DEFAULT_BATCH:
                    insert_rows()
                yield p

    out_dir = run.dir / "pairs"
    con.execute("BEGIN IMMEDIATE")
    try:
        con.execute("DELETE FROM pairs WHERE plan=?", (plan,))
        files = pairs_core.write_pairs(all_pairs(), out_dir, formats=pc.formats, principles=run.principles.keys,
                                       trl_format=None if pc.trl_format == "none" else pc.trl_format,
                                       allow_empty=allow_empty)
        insert_rows()
        for why in pairs_core.VETO_REASONS:
            counts[f"vetoed_{why}"] = vetoed[why]
        counts["crisis_tiers"] = {t: tiers[t] for t in ("none", "possible", "high")}
        result = {"counts": counts, "files": {k: [str(p) for p in v] for k, v in files.items()},
                  "calibration": run.cfg.judge.calibration, "min_gap": pc.min_gap, "plan": plan}
        run.store.set_meta("pairs_result", result)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return result


class ReplyState(NamedTuple):
    """How a stored response's reply ended (``validate.py``), read from its row."""

    error: str | None
    finish_reason: str | None
    truncated: bool


def reply_states(run: Run, ids: list[str]) -> dict[str, ReplyState]:
    """response id -> its reply's state, for the ids that have a row (queries in slices under SQLite's 999
    parameters)."""
    out: dict[str, ReplyState] = {}
    for i in range(0, len(ids), 900):
        part = ids[i:i + 900]
        q = ("SELECT id, error, json_extract(provenance, '$.finish_reason'), json_extract(provenance, "
             f"'$.truncated') FROM responses WHERE id IN ({','.join('?' * len(part))})")
        for rid, error, finish, truncated in run.store.con.execute(q, part):
            out[rid] = ReplyState(error, finish, bool(truncated))
    return out


def export_responses(run: Run) -> Path:
    """All planned responses (ok and failed, judged or not) as one parquet, the stats report's second input;
    overall under the weights configured now; ``flags``, the kinds of each ok reply's reply-check flags
    (computed here from the text: the store keeps none, so a run stored before the checks needs no migration;
    null for a reply that failed or is pending)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    judge = run.judge_fingerprint()
    keys = run.principles.keys
    path = run.dir / "responses.parquet"
    tmp = atomic.make_temp(path)
    cols: dict[str, list] = {c: [] for c in ["response_id", "speech_id", "profile", "model", "status",
                                                "generate_error", "finish_reason", "truncated",
                                                "judge_status", "judge_error", "overall", "flags", *keys]}
    for speech, plan in run.plan_state(judge):
        states = reply_states(run, [pl.rid for pl in plan])
        for pl in plan:
            r, j, p = pl.response, pl.judgment, pl.profile
            st = states.get(pl.rid)
            judged = j is not None and pl.response_ok
            cols["response_id"].append(pl.rid)
            cols["speech_id"].append(speech.id)
            cols["profile"].append(p.name)
            cols["model"].append(p.model)
            cols["status"].append(r.status if r else "pending")
            cols["generate_error"].append(st.error if st else None)
            cols["finish_reason"].append(st.finish_reason if st else None)
            cols["truncated"].append(st.truncated if st else False)
            cols["judge_status"].append(j.status if judged else "pending")  # type: ignore[union-attr]
            cols["judge_error"].append(j.error if judged else None)  # type: ignore[union-attr]
            ok = judged and j.status == "ok" and j.scores  # type: ignore[union-attr]
            cols["overall"].append(run.overall(j.scores) if ok else None)  # type: ignore[union-attr, arg-type]
            cols["flags"].append(list(reply_flags(r.text)) if pl.response_ok and r is not None and r.text else None)
            for k in keys:
                cols[k].append((j.scores or {}).get(k) if judged else None)  # type: ignore[union-attr]
    types = {"flags": pa.list_(pa.string())}  # all-null in a run with nothing generated: the type says what it holds
    try:
        pq.write_table(pa.table({c: pa.array(v, types.get(c)) for c, v in cols.items()}), tmp)
        atomic.replace(tmp, path)  # fsynced: a crash never leaves the new name on a half-written file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# -- stats ----------------------------------------------------------------------------------
def stage_stats(run: Run) -> Path:
    """The dataset report (JSON, HTML, PNG) of the run's pairs and planned responses; returns the HTML page."""
    from .stats import dataset_report

    out = run.dir / "report"
    result = run.store.get_meta("pairs_result") or {}
    counts = result.get("counts", {}) if result.get("plan") == pairs_plan(run) else {}
    vetoed = {why: counts[f"vetoed_{why}"] for why in pairs_core.VETO_REASONS if f"vetoed_{why}" in counts}
    dataset_report(run.dir / "pairs", out_dir=out, responses=export_responses(run),
                   vetoed=vetoed if counts else None)
    return out / "report.html"


# -- status / dry run -----------------------------------------------------------------------
def status(run: Run) -> dict[str, Any]:
    """Where the current plan stands, stage by stage (rows of other plans, e.g. an older judge, are ignored).

    ``generate`` counts replies cut by max_tokens (``truncated``: failed, or kept and flagged) and replies
    refused as invalid (``invalid``); ``pairs_vetoed`` the pairs the safety veto dropped when they were built.
    """
    judge = run.judge_fingerprint()
    gen = {"planned": 0, "ok": 0, "failed": 0, "pending": 0, "truncated": 0, "invalid": 0}
    jud = {"planned": 0, "ok": 0, "failed": 0, "pending": 0}
    for _, plan in run.plan_state(judge):
        states = reply_states(run, [p.rid for p in plan])
        for p in plan:
            r, j, st = p.response, p.judgment, states.get(p.rid)
            gen["planned"] += 1
            gen[r.status if r and r.status in ("ok", "failed") else "pending"] += 1
            if st is not None:
                gen["truncated"] += st.truncated or bool(st.error and st.error.startswith(TRUNCATED))
                gen["invalid"] += bool(st.error and st.error.startswith(INVALID))
            if p.response_ok:
                jud["planned"] += 1
                jud[j.status if j and j.status in ("ok", "failed") else "pending"] += 1
    plan_key = pairs_plan(run)
    pairs = dict(run.store.con.execute("SELECT split, count(*) FROM pairs WHERE plan=? GROUP BY split",
                                       (plan_key,)).fetchall())
    result = run.store.get_meta("pairs_result") or {}
    counts = result.get("counts", {}) if result.get("plan") == plan_key else {}
    vetoed = {why: counts.get(f"vetoed_{why}", 0) for why in pairs_core.VETO_REASONS}
    return {"run_dir": str(run.dir), "speeches": run.store.count_speeches(), "generate": gen, "judge": jud,
            "pairs": pairs, "pairs_vetoed": vetoed, "calls": run.store.call_stats()}


def dry_run(run: Run) -> dict[str, Any]:
    """Calls, tokens and cost per backend the next run would spend (``estimate.py``); nothing is called."""
    est = Estimate()
    jc = run.cfg.judge
    scorer = run.judge_scorer()
    for speech, plan in run.plan_state(run.judge_fingerprint()):
        for pl in plan:
            if pl.response_ok:
                resp_chars = len(pl.response.text or "")  # type: ignore[union-attr]
            else:
                req = run.therapist_request(pl.profile, speech.text)
                est.generation(pl.profile.backend, req)
                resp_chars = req.sampling.max_tokens * CHARS_PER_TOKEN
            if not pl.judgment_ok:
                est.add(jc.backend, scorer.prompt_chars(len(speech.text), resp_chars), scorer.max_completion_tokens,
                        model=jc.model)
    return est.by_backend(run.cfg.backends)


# -- the whole run --------------------------------------------------------------------------
Stage = Callable[[Run], Awaitable[Any]]
OnStage = Callable[[str, Any], None]


def call_stages(run: Run, stages: dict[str, Stage], on_stage: OnStage = lambda name, result: None) -> dict[str, Any]:
    """Run the stages that call models, in order, in one event loop (a loaded model serves them all), then
    close the backends. ``on_stage`` hears each result as it comes, then "usage" (what each backend
    spent), also when a stage fails or is interrupted."""
    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            for name, stage in stages.items():
                out[name] = await stage(run)
                on_stage(name, out[name])
        finally:
            on_stage("usage", run.usage())
            await run.aclose()
        return out

    return asyncio.run(go())


def run_all(run: Run, on_stage: OnStage = lambda name, result: None, *, estimate_only: bool = False,
            report: bool = True, allow_empty: bool = False) -> dict[str, Any]:
    """``psychocounsel run``: ingest, generate, judge, pairs, then the dataset report when there are pairs.

    ``on_stage(name, result)`` hears each stage as it finishes (the command prints there): "ingest",
    "generate", "judge", "usage", "pairs", "report" (the HTML path, or None when no pair came out).
    ``estimate_only``: ingest (free), then "dry_run" with the estimate; nothing is called. ``report=False``
    leaves the report out (tests that check the data only). ``allow_empty``: as ``stage_pairs``.
    """
    results: dict[str, Any] = {}

    def done(name: str, value: Any) -> None:
        results[name] = value
        on_stage(name, value)

    done("ingest", stage_ingest(run))
    if estimate_only:
        done("dry_run", dry_run(run))
        return results
    call_stages(run, {"generate": stage_generate, "judge": stage_judge}, done)
    pairs = stage_pairs(run, allow_empty=allow_empty)
    done("pairs", pairs)
    if report:
        made = sum(pairs["counts"].get(s, 0) for s in pairs_core.SPLITS)
        done("report", stage_stats(run) if made else None)
    return results
