"""The data stages wired to the run store: ingest -> generate -> judge -> pairs -> stats.

Each stage is idempotent and recomputes its plan from the config: which speeches, which k
profiles per speech (seeded draw), which judge. The store answers what is already done, so a
rerun after a crash, kill -9 or Ctrl-C continues where it stopped and pays for no call twice.
The pure cores live in their own modules (ingest, judge, pairs, stats); this module only moves
records between them, the backends and the store.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..rubric import score as judge_core
from . import pairs as pairs_core
from ..backends import in_flight, make_backend
from ..backends.base import Backend, ChatRequest, Sampling
from ..config import ProfileConfig, RunConfig
from ..errors import BackendError, UserError
from ..rubric.principles import PrincipleSet, load_principles
from ..rubric.prompts import Prompt, load_prompt
from .records import ScoredResponse, text_id
from ..runner import CachedCaller, StageProgress, call_until_parsed, retry_sampling, run_pool
from ..store import Store, Writer

CHOICES = ["1", "2", "3", "4", "5"]


def _fp(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=8).hexdigest()


def draw_profiles(speech_id: str, names: list[str], k: int, seed: int) -> list[str]:
    """The k profiles that answer a speech: seeded per speech, so adding speeches changes no old draw."""
    return random.Random(f"{seed}:{speech_id}").sample(names, k)


@dataclass
class Run:
    """One run directory: config, store, principles, prompts and (lazily) the backends."""

    cfg: RunConfig
    base_dir: Path = Path(".")
    progress: StageProgress = field(default_factory=StageProgress)

    def __post_init__(self) -> None:
        self.dir = Path(self.cfg.run_dir)
        if not self.dir.is_absolute():
            self.dir = self.base_dir / self.dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.dir / "run.sqlite")
        self.principles: PrincipleSet = load_principles(self._path(self.cfg.principles))
        self.therapist_prompt: Prompt = load_prompt(self._path(self.cfg.therapists.prompt))
        self.judge_prompt: Prompt = load_prompt(self._path(self.cfg.judge.prompt))
        self._backends: dict[str, Backend] = {}
        self._model_ids: dict[tuple[str, str], Any] = {}
        (self.dir / "config.resolved.json").write_text(self.cfg.model_dump_json(indent=2))

    def _path(self, spec: str) -> str:
        """Built-in names stay as they are; relative file paths resolve against the config's folder."""
        p = self.base_dir / spec
        return str(p) if ("/" in spec or spec.endswith((".yaml", ".yml", ".txt"))) and p.exists() else spec

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = make_backend(self.cfg.backends[name])
        return self._backends[name]

    def usage(self) -> dict[str, Any]:
        """What each HTTP backend spent so far (requests, retries, failures, tokens, cost)."""
        return {n: b.usage for n, b in self._backends.items() if getattr(b, "usage", None) is not None}

    async def aclose(self) -> None:
        for b in self._backends.values():
            await b.aclose()
        self._backends.clear()

    def close(self) -> None:
        self.store.close()

    # -- plan -------------------------------------------------------------------------------
    def model_identity(self, backend: str, model: str) -> Any:
        """What identifies a model's answers: for local models a fingerprint of the weight files (cheap:
        no model is loaded), for servers the backend type and the model name."""
        if self.cfg.backends[backend].type == "local":
            if (backend, model) not in self._model_ids:
                self._model_ids[backend, model] = self.backend(backend).identity(model)  # type: ignore[call-arg]
            return self._model_ids[backend, model]
        return self.cfg.backends[backend].type

    def profile_fingerprint(self, p: ProfileConfig) -> str:
        """Everything that shapes a profile's answers, minus the speech."""
        return _fp({
            "backend": self.model_identity(p.backend, p.model), "model": p.model,
            "system": p.system_prompt or self.therapist_prompt.version, "sampling": p.sampling.model_dump(),
        })

    def judge_fingerprint(self) -> str:
        j = self.cfg.judge
        return _fp({"backend": self.model_identity(j.backend, j.model), "model": j.model, "mode": j.mode,
                    "prompt": self.judge_prompt.version, "principles": self.principles.version,
                    "sampling": j.sampling.model_dump(), "attempts": j.max_attempts})

    def planned(self) -> Iterator[tuple[Any, list[tuple[str, ProfileConfig]]]]:
        """(speech row, [(response id, profile), ...]) for every speech, in ingest order, chunk by chunk."""
        profiles = {p.name: p for p in self.cfg.therapists.profiles}
        names = list(profiles)
        fps = {n: self.profile_fingerprint(p) for n, p in profiles.items()}
        for chunk in self.store.iter_speeches():
            for row in chunk:
                drawn = draw_profiles(row[0], names, self.cfg.therapists.k, self.cfg.seed)
                yield row, [(text_id(row[0], n, fps[n]), profiles[n]) for n in drawn]

    def planned_chunks(self, size: int = 500) -> Iterator[list[tuple[Any, list[tuple[str, ProfileConfig]]]]]:
        buf = []
        for item in self.planned():
            buf.append(item)
            if len(buf) >= size:
                yield buf
                buf = []
        if buf:
            yield buf

    def plan_state(self, judge: str | None = None) -> Iterator[tuple[Any, list[Planned]]]:
        """(speech row, [Planned, ...]) with what the store holds for each planned response (and its
        judgment by ``judge``), two queries per 500 speeches."""
        for chunk in self.planned_chunks():
            ids = [rid for _, plan in chunk for rid, _ in plan]
            resp = self.store.responses_by_id(ids)
            judged = self.store.judgments_by_id(ids, judge) if judge else {}
            for row, plan in chunk:
                yield row, [Planned(rid, p, resp.get(rid), judged.get(rid)) for rid, p in plan]


@dataclass
class Planned:
    """One planned response and what the store holds for it (None: nothing yet)."""

    rid: str
    profile: ProfileConfig
    response: tuple | None  # (status, text, model, profile)
    judgment: tuple | None  # (status, scores, overall, rationale, error)

    @property
    def response_ok(self) -> bool:
        return self.response is not None and self.response[0] == "ok"

    @property
    def judgment_ok(self) -> bool:
        return self.judgment is not None and self.judgment[0] == "ok"


# -- ingest ---------------------------------------------------------------------------------
def stage_ingest(run: Run, force: bool = False) -> dict[str, Any]:
    from .ingest import ingest, resolve_path

    scfg = run.cfg.speeches
    src = Path(resolve_path(scfg.path, run.base_dir))
    stamp = [src.stat().st_size, src.stat().st_mtime_ns] if src.exists() and src.is_file() else None
    key = _fp({"speeches": scfg.model_dump(), "file": str(src), "stamp": stamp, "seed": run.cfg.seed,
               "dev": run.cfg.pairs.dev_frac, "test": run.cfg.pairs.test_frac})
    if not force and run.store.get_meta("ingest_key") == key:
        return run.store.get_meta("ingest_report") | {"skipped": True}
    speeches, report = ingest(scfg, run.base_dir)
    pc = run.cfg.pairs

    def rows():
        for seq, s in enumerate(speeches):
            split = pairs_core.split_of(s.id, run.cfg.seed, pc.dev_frac, pc.test_frac)
            yield (s.id, seq, s.text, s.source, s.topic, json.dumps(s.meta, ensure_ascii=False), split)

    n = run.store.replace_speeches(rows())
    out = report.to_dict()
    run.store.set_meta("ingest_report", out)
    run.store.set_meta("ingest_key", key)
    (run.dir / "ingest_report.json").write_text(json.dumps(out, indent=2, ensure_ascii=False))
    if n == 0:
        raise UserError(f"{scfg.path}: no speech survived cleaning (see {run.dir / 'ingest_report.json'})")
    return out


# -- generate -------------------------------------------------------------------------------
def _generation_work(run: Run, counts: dict[str, int]) -> Iterator[tuple]:
    """Planned responses that are not stored as ok yet (failed ones are tried again)."""
    for row, plan in run.plan_state():
        for p in plan:
            if p.response_ok:
                counts["done_before"] += 1
            else:
                yield row, p.rid, p.profile


def _therapist_request(run: Run, speech: str, p: ProfileConfig) -> ChatRequest:
    system = p.system_prompt if p.system_prompt is not None else run.therapist_prompt.text
    s = p.sampling
    return ChatRequest.chat(
        p.model, [{"role": "system", "content": system}, {"role": "user", "content": speech}],
        sampling=Sampling(s.temperature, s.top_p, s.max_tokens, s.seed),
        tag=run.therapist_prompt.version if p.system_prompt is None else "custom:" + _fp(system),
    )


async def stage_generate(run: Run) -> dict[str, int]:
    writer = Writer(run.store)
    counts = {"done_before": 0, "generated": 0, "cached": 0, "failed": 0}
    total = run.store.count_speeches() * run.cfg.therapists.k
    callers: dict[str, CachedCaller] = {}
    fps = {p.name: run.profile_fingerprint(p) for p in run.cfg.therapists.profiles}
    before = run.store.con.execute("SELECT count(*) FROM responses WHERE status='ok'").fetchone()[0]
    concurrency = sum(in_flight(run.cfg.backends[b]) for b in {p.backend for p in run.cfg.therapists.profiles})

    with run.progress.task("generate", total=total, completed=min(before, total)) as bar:
        async def one(item: tuple) -> None:
            row, rid, p = item
            if p.backend not in callers:
                callers[p.backend] = CachedCaller(run.store, writer, p.backend, run.backend(p.backend))
            req = _therapist_request(run, row[2], p)
            prov = {"profile": p.name, "backend": p.backend, "sampling": p.sampling.model_dump(),
                    "prompt_version": req.tag, "fingerprint": fps[p.name]}
            now = time.time()
            try:
                c, key, cached = await callers[p.backend].complete(req)
            except BackendError as e:
                counts["failed"] += 1
                writer.add("responses", (rid, row[0], p.name, p.model, fps[p.name], "failed", None, str(e),
                                         None, None, None, None, json.dumps(prov), now))
                return
            finally:
                bar.advance()
            text = c.text.strip()
            status, err = ("ok", None) if text else ("failed", "empty reply")
            counts["cached" if cached else "generated"] += status == "ok"
            counts["failed"] += status == "failed"
            prov["base_url"] = c.base_url
            writer.add("responses", (rid, row[0], p.name, p.model, fps[p.name], status, text or None, err,
                                     c.prompt_tokens, c.completion_tokens, c.latency_s, key, json.dumps(prov), now))

        try:
            await run_pool(_generation_work(run, counts), one, concurrency)
        finally:
            writer.commit()
    return counts


# -- judge ----------------------------------------------------------------------------------
def _judge_work(run: Run, judge: str, counts: dict[str, int]) -> Iterator[tuple]:
    """(speech row, response id, response text) for ok responses with no ok judgment yet."""
    for row, plan in run.plan_state(judge):
        for p in plan:
            if not p.response_ok:
                counts["no_response"] += 1
            elif p.judgment_ok:
                counts["done_before"] += 1
            else:
                yield row, p.rid, p.response[1]


async def stage_judge(run: Run) -> dict[str, int]:
    jc = run.cfg.judge
    judge = run.judge_fingerprint()
    writer = Writer(run.store)
    caller = CachedCaller(run.store, writer, jc.backend, run.backend(jc.backend))
    counts = {"done_before": 0, "judged": 0, "failed": 0, "no_response": 0, "calls_cached": 0}
    keys = run.principles.keys
    weights = jc.weights
    fmt = judge_core.judge_response_format(run.principles)
    structured = getattr(run.cfg.backends[jc.backend], "structured_output", False)
    total = run.store.count_speeches() * run.cfg.therapists.k
    before = run.store.con.execute("SELECT count(*) FROM judgments WHERE judge=? AND status='ok'", (judge,)).fetchone()[0]

    def record(rid: str, status: str, scores: dict | None, rationale: str, err: str | None, attempts: int, ck: list):
        ov = judge_core.overall(scores, weights) if scores else None
        writer.add("judgments", (rid, judge, status, json.dumps(scores) if scores else None, rationale, ov, err,
                                 attempts, json.dumps(ck), time.time()))

    async def one_json(item: tuple) -> None:
        row, rid, text = item
        base = judge_core.build_judge_messages(run.principles, run.judge_prompt, row[2], text)
        try:
            t = await call_until_parsed(
                caller.complete,
                lambda attempt: ChatRequest.chat(jc.model, base, sampling=retry_sampling(jc.sampling, attempt),
                                                 response_format=fmt if structured else None,
                                                 tag=f"{run.judge_prompt.version}#{attempt}"),
                lambda reply: judge_core.parse_judgment(reply, run.principles),
                (judge_core.JudgeParseError,), jc.max_attempts)
            counts["calls_cached"] += t.cached
            counts["judged" if t.ok else "failed"] += 1
            if t.ok:
                record(rid, "ok", t.value.scores, t.value.rationale, None, t.attempts, t.call_keys)
            else:
                record(rid, "failed", None, "", "; ".join(t.errors)[:2000], t.attempts, t.call_keys)
        finally:
            bar.advance()

    async def one_geval(item: tuple) -> None:
        row, rid, text = item
        try:
            prefix, suffixes = judge_core.geval_prefix_and_suffixes(run.principles, run.judge_prompt, row[2], text)
            key = _fp({"b": caller.identity(jc.model), "m": jc.model, "p": prefix, "s": suffixes, "c": CHOICES, "mode": "geval"})
            try:
                probs, cached = await caller.cached_json(
                    key, jc.model, json.dumps({"tag": run.judge_prompt.version, "geval": True}),
                    lambda: caller.backend.score_choices(jc.model, prefix, suffixes, CHOICES))
            except BackendError as e:
                counts["failed"] += 1
                record(rid, "failed", None, "", f"call: {e}", 1, [])
                return
            counts["calls_cached"] += cached
            scores = {k: round(judge_core.expected_score(p), 4) for k, p in zip(keys, probs)}
            counts["judged"] += 1
            record(rid, "ok", scores, "G-Eval expected score from next-token probabilities", None, 1, [key])
        finally:
            bar.advance()

    concurrency = in_flight(run.cfg.backends[jc.backend])
    with run.progress.task(f"judge ({jc.mode})", total=total, completed=min(before, total)) as bar:
        try:
            await run_pool(_judge_work(run, judge, counts), one_geval if jc.mode == "geval" else one_json, concurrency)
        finally:
            writer.commit()
    return counts


# -- pairs ----------------------------------------------------------------------------------
def judged_responses(run: Run) -> Iterator[tuple[Any, list[ScoredResponse]]]:
    """(speech row, its ok-judged responses) with raw scores, in ingest order."""
    for row, plan in run.plan_state(run.judge_fingerprint()):
        # chosen_model / rejected_model name the pool member: the profile (model + prompt + sampling);
        # in the paper's pool, one profile per model, so it is the model's name
        yield row, [ScoredResponse(p.rid, row[0], p.response[3], p.response[1], p.judgment[1], p.judgment[2])
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
    cal = judge_core.calibrate(matrix, method)
    return {rid: {k: float(cal[k][i]) for k in matrix} for i, rid in enumerate(ids)}


def pairs_plan(run: Run) -> str:
    """Key of the pair set: the judge, the pair settings and the calibration that made it."""
    return run.judge_fingerprint() + ":" + _fp(run.cfg.pairs.model_dump()) + ":" + run.cfg.judge.calibration


def stage_pairs(run: Run) -> dict[str, Any]:
    pc = run.cfg.pairs
    cal = calibrated_scores(run)
    weights = run.cfg.judge.weights
    plan = pairs_plan(run)
    counts: dict[str, int] = {"speeches": 0, "speeches_with_pairs": 0}
    writer = Writer(run.store)
    run.store.con.execute("DELETE FROM pairs WHERE plan=?", (plan,))

    def all_pairs():
        for row, responses in judged_responses(run):
            counts["speeches"] += 1
            if cal is not None:
                # the rating columns keep the judge's own scores; calibration only decides the order
                for r in responses:
                    r.overall = judge_core.overall(cal[r.response_id], weights)
            split = row[4] or pairs_core.split_of(row[0], run.cfg.seed, pc.dev_frac, pc.test_frac)
            ps = pairs_core.build_pairs(row[2], row[0], split, responses, pc.min_gap)
            counts["speeches_with_pairs"] += bool(ps)
            for p in ps:
                counts[p.split] = counts.get(p.split, 0) + 1
                writer.add("pairs", (p.chosen.response_id, p.rejected.response_id, p.speech_id, p.split, p.gap, plan))
                yield p

    out_dir = run.dir / "pairs"
    try:
        files = pairs_core.write_pairs(all_pairs(), out_dir, formats=pc.formats, principles=run.principles.keys,
                                       trl_format=None if pc.trl_format == "none" else pc.trl_format)
    finally:
        writer.commit()
    result = {"counts": counts, "files": {k: [str(p) for p in v] for k, v in files.items()},
              "calibration": run.cfg.judge.calibration, "min_gap": pc.min_gap}
    run.store.set_meta("pairs_result", result)
    return result


def export_responses(run: Run) -> Path:
    """All judged responses (ok and failed) as one parquet, the stats report's second input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    judge = run.judge_fingerprint()
    keys = run.principles.keys
    path = run.dir / "responses.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    cols: dict[str, list] = {c: [] for c in ["response_id", "speech_id", "profile", "model", "status",
                                                "judge_status", "judge_error", "overall", *keys]}
    for row, plan in run.plan_state(judge):
        for pl in plan:
            r, j, p = pl.response, pl.judgment, pl.profile
            cols["response_id"].append(pl.rid)
            cols["speech_id"].append(row[0])
            cols["profile"].append(p.name)
            cols["model"].append(p.model)
            cols["status"].append(r[0] if r else "pending")
            cols["judge_status"].append(j[0] if j else "pending")
            cols["judge_error"].append(j[4] if j else None)
            cols["overall"].append(j[2] if j else None)
            for k in keys:
                cols[k].append((j[1] or {}).get(k) if j else None)
    pq.write_table(pa.table(cols), tmp)
    tmp.replace(path)
    return path


# -- status / dry run -----------------------------------------------------------------------
def status(run: Run) -> dict[str, Any]:
    """Where the current plan stands, stage by stage (rows of other plans, e.g. an older judge, are ignored)."""
    judge = run.judge_fingerprint()
    gen = {"planned": 0, "ok": 0, "failed": 0, "pending": 0}
    jud = {"planned": 0, "ok": 0, "failed": 0, "pending": 0}
    for _, plan in run.plan_state(judge):
        for p in plan:
            r, j = p.response, p.judgment
            gen["planned"] += 1
            gen[r[0] if r and r[0] in ("ok", "failed") else "pending"] += 1
            if p.response_ok:
                jud["planned"] += 1
                jud[j[0] if j and j[0] in ("ok", "failed") else "pending"] += 1
    pairs = dict(run.store.con.execute("SELECT split, count(*) FROM pairs WHERE plan=? GROUP BY split",
                                       (pairs_plan(run),)).fetchall())
    return {"run_dir": str(run.dir), "speeches": run.store.count_speeches(), "generate": gen, "judge": jud,
            "pairs": pairs, "calls": run.store.call_stats()}


def dry_run(run: Run) -> dict[str, Any]:
    """Calls and tokens the next run would spend (upper bounds), and cost where prices are configured.

    Tokens are estimated as characters / 4 (English text with BPE tokenizers averages ~4 chars per
    token) plus max_tokens for the completion. Nothing is called.
    """
    from collections import defaultdict

    est: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    judge = run.judge_fingerprint()
    jc = run.cfg.judge
    rubric_chars = len(run.judge_prompt.text) + sum(
        len(p.definition) + sum(len(v) for v in p.rubric.values()) for p in run.principles.principles)
    for row, plan in run.plan_state(judge):
        for pl in plan:
            p, r = pl.profile, pl.response
            if not pl.response_ok:
                e = est[p.backend]
                e["calls"] += 1
                e["prompt_tokens"] += (len(row[2]) + len(p.system_prompt or run.therapist_prompt.text)) / 4
                e["completion_tokens"] += p.sampling.max_tokens
                resp_chars = p.sampling.max_tokens * 4
            else:
                resp_chars = len(r[1])
            if not pl.judgment_ok:
                e = est[jc.backend]
                e["calls"] += 1  # retries happen only on bad replies: not counted ahead
                e["prompt_tokens"] += (len(row[2]) + resp_chars + rubric_chars) / 4
                e["completion_tokens"] += 0 if jc.mode == "geval" else jc.sampling.max_tokens
    out: dict[str, Any] = {}
    for name, e in est.items():
        b = run.cfg.backends[name]
        cost = None
        if b.price_input_per_mtok is not None and b.price_output_per_mtok is not None:
            cost = (e["prompt_tokens"] * b.price_input_per_mtok + e["completion_tokens"] * b.price_output_per_mtok) / 1e6
        out[name] = {"calls": int(e["calls"]), "prompt_tokens": int(e["prompt_tokens"]),
                     "completion_tokens": int(e["completion_tokens"]), "cost_usd": cost}
    return out


async def run_all(run: Run) -> dict[str, Any]:
    results: dict[str, Any] = {"ingest": stage_ingest(run)}
    try:
        results["generate"] = await stage_generate(run)
        results["judge"] = await stage_judge(run)
    finally:
        await run.aclose()
    results["pairs"] = stage_pairs(run)
    return results
