"""``psychocounsel evaluate CONFIG``: a counseling policy against a reference, judged by principles.

    psychocounsel evaluate configs/eval/demo.yaml              # embedded SmolLM2, a few minutes on a CPU
    psychocounsel evaluate configs/eval/paper.yaml --dry-run   # calls and tokens before spending
    psychocounsel evaluate configs/eval/paper.yaml --max-calls 500   # spend at most 500 calls; rerun continues
    psychocounsel leaderboard runs/eval/*                      # one table, zero model calls

Steps, each content-keyed and resumable (a rerun of a finished evaluation makes zero calls):
1. speeches (``eval_data``): held-out questions of pair files (the test split), or a speeches file; a seeded
   sample of N.
2. generate: each model side answers each speech (a file side is read instead). In ``length_cap`` mode
   a word-limit instruction and a token cap apply to every generated side (the paper's second setting).
3. judge (``eval_stages``): every comparison twice, policy shown as A then as B (``eval_judge``); each 1-5
   principle score set by the pipeline's judge (``judge.py``). Bad replies are retried, then recorded as
   failures: counted and shown, never ties or scores.
4. results (``eval_metrics``) and report (``eval_report``): win rate, length-controlled win rate, flip rate,
   per-principle scores, safety apart, bootstrap intervals over speeches.

Storage: ``<out_dir>/eval.sqlite`` holds the call cache (the pipeline's ``calls`` table) and one row per
finished item (``eval_items``: a generation, a verdict or a score set, keyed by a hash of everything that
shapes it). ``--max-calls`` counts only calls that reach a model; cached answers are free.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator

import click

from ..backends import in_flight, make_backend
from ..backends.base import Backend, ChatRequest, Completion, Sampling
from ..config import load_yaml_config
from ..errors import BackendError
from .config import EvalConfig, SideConfig
from .data import load_speech_set, read_responses_file, sample_ids
from ..rubric.principles import load_principles
from ..rubric.prompts import load_prompt
from ..runner import CachedCaller, StageProgress, request_summary, run_pool
from ..store import Store, Writer

__all__ = ["CallBudget", "Evaluation", "evaluate", "open_evaluation", "sample_ids"]
SIDES = ("policy", "reference")
ORDERS = ("policy_first", "reference_first")
ITEMS_SQL = """CREATE TABLE IF NOT EXISTS eval_items (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, value TEXT, error TEXT,
    attempts INTEGER NOT NULL, call_keys TEXT, updated_at REAL NOT NULL)"""


def _fp(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode(), digest_size=12).hexdigest()


class OverBudget(Exception):
    """The --max-calls cap is reached: the item stays pending for the next run."""


@dataclass
class CallBudget:
    """Counts calls that reach a model (cache hits are free). ``limit=None``: no cap."""

    limit: int | None = None
    used: int = 0
    refused: int = 0

    def take(self) -> None:
        if self.limit is not None and self.used >= self.limit:
            self.refused += 1
            raise OverBudget
        self.used += 1


class EvalWriter(Writer):
    SQL = {**Writer.SQL, "eval_items": "INSERT OR REPLACE INTO eval_items VALUES (?,?,?,?,?,?,?,?)"}


# -- the evaluation ------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One evaluation folder: config, store, prompts, speeches, and (lazily) the backends."""

    cfg: EvalConfig
    base_dir: Path = Path(".")
    progress: StageProgress = field(default_factory=lambda: StageProgress(enabled=False))
    budget: CallBudget = field(default_factory=CallBudget)

    def __post_init__(self) -> None:
        self.dir = Path(self.cfg.out_dir)
        if self.cfg.mode == "length_cap" and not self.dir.name.endswith("lencap"):
            # its own folder: `-o mode=length_cap` must not overwrite the standard evaluation's results
            # (nothing is lost: a capped generation and its verdicts never share a cache key with uncapped ones)
            self.dir = self.dir.with_name(self.dir.name + "-lencap")
        if not self.dir.is_absolute():
            self.dir = self.base_dir / self.dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.dir / "eval.sqlite")
        self.store.con.execute(ITEMS_SQL)
        self.principles = load_principles(self._path(self.cfg.principles))
        self.therapist_prompt = load_prompt(self._path(self.cfg.therapist_prompt))
        self.pairwise_prompt = load_prompt(self._path(self.cfg.pairwise.prompt or "pairwise_v1"))
        self.score_prompt = load_prompt(self._path(self.cfg.scores.prompt)) if self.cfg.scores else None
        self.speeches = load_speech_set(self.cfg, self.base_dir)
        self.files = {s: read_responses_file(c, self.base_dir) for s, c in self._sides() if c.responses}
        self._backends: dict[str, Backend] = {}
        self._idents: dict[tuple[str, str], Any] = {}
        self._fps: dict[str, str] = {}  # judge fingerprints, computed once per run
        self._gen_keys: dict[tuple[str, str], str] = {}
        self.on_done: Callable[[], None] = lambda: None  # the judge stages point it at their progress bar
        self.counts: dict[str, int] = {}
        (self.dir / "config.resolved.json").write_text(self.cfg.model_dump_json(indent=2))

    def _path(self, spec: str) -> str:
        p = self.base_dir / spec
        return str(p) if ("/" in spec or spec.endswith((".yaml", ".yml", ".txt"))) and p.exists() else spec

    def _sides(self) -> list[tuple[str, SideConfig]]:
        return [("policy", self.cfg.policy), ("reference", self.cfg.reference)]

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = make_backend(self.cfg.backends[name])
        return self._backends[name]

    def identity(self, backend: str, model: str) -> Any:
        """What identifies a model's answers (local: a fingerprint of the weight files; nothing is loaded)."""
        if self.cfg.backends[backend].type != "local":
            return self.cfg.backends[backend].type  # as pipeline.Run.model_identity: the model name is keyed apart
        if (backend, model) not in self._idents:
            self._idents[backend, model] = self.backend(backend).identity(model)  # type: ignore[call-arg]
        return self._idents[backend, model]

    async def aclose(self) -> None:
        for b in self._backends.values():
            await b.aclose()
        self._backends.clear()

    def close(self) -> None:
        self.store.close()

    # -- keys ---------------------------------------------------------------------------------------------
    def gen_request(self, side: SideConfig, speech: str) -> ChatRequest:
        system = side.system_prompt if side.system_prompt is not None else self.therapist_prompt.text
        tag = self.therapist_prompt.version if side.system_prompt is None else "custom:" + _fp(system)
        s = side.sampling
        max_tokens = s.max_tokens
        if self.cfg.mode == "length_cap":
            cap = self.cfg.length_cap
            system = system + "\n\n" + cap.instruction.replace("{words}", str(cap.words))
            max_tokens = min(max_tokens, cap.max_tokens)
            tag += f"|lencap:{cap.words}:{cap.max_tokens}"
        system = system.strip()
        # an empty system prompt sends the bare speech (as the paper's policy and GPT-4o reference saw it)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": speech}]
        return ChatRequest.chat(side.model or "", messages,
                                sampling=Sampling(s.temperature, s.top_p, max_tokens, s.seed), tag=tag)

    def gen_key(self, side: SideConfig, speech: str) -> str:
        memo = self._gen_keys.get((side.name, speech))
        if memo is None:
            memo = self._gen_keys[side.name, speech] = self._gen_key(side, speech)
        return memo

    def _gen_key(self, side: SideConfig, speech: str) -> str:
        req = self.gen_request(side, speech)
        return "gen:" + _fp({"b": self.identity(side.backend or "", req.model), "m": req.model,
                             "msgs": req.messages, "s": [req.sampling.temperature, req.sampling.top_p,
                                                         req.sampling.max_tokens, req.sampling.seed]})

    def pairwise_fingerprint(self) -> str:
        if "pairwise" not in self._fps:
            self._fps["pairwise"] = self._pairwise_fingerprint()
        return self._fps["pairwise"]

    def _pairwise_fingerprint(self) -> str:
        pc = self.cfg.pairwise
        return _fp({"b": self.identity(pc.backend, pc.model), "m": pc.model, "mode": pc.mode,
                    "prompt": self.pairwise_prompt.version, "principles": self.principles.version,
                    "s": pc.sampling.model_dump(), "n": pc.max_attempts, "tie": pc.tie_margin})

    def verdict_key(self, speech: str, a: str, b: str) -> str:
        return "verdict:" + _fp([self.pairwise_fingerprint(), speech, a, b])

    def score_fingerprint(self) -> str:
        if "score" not in self._fps:
            self._fps["score"] = self._score_fingerprint()
        return self._fps["score"]

    def _score_fingerprint(self) -> str:
        sc = self.cfg.scores
        assert sc is not None and self.score_prompt is not None
        return _fp({"b": self.identity(sc.backend, sc.model), "m": sc.model, "mode": sc.mode,
                    "prompt": self.score_prompt.version, "principles": self.principles.version,
                    "s": sc.sampling.model_dump(), "n": sc.max_attempts})

    def score_key(self, speech: str, response: str) -> str:
        return "score:" + _fp([self.score_fingerprint(), speech, response])

    def items(self, keys: list[str]) -> dict[str, tuple]:
        """key -> (status, value, error, attempts) for the stored items among ``keys``."""
        out: dict[str, tuple] = {}
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            q = f"SELECT key, status, value, error, attempts FROM eval_items WHERE key IN ({','.join('?' * len(part))})"
            for k, st, v, e, a in self.store.con.execute(q, part):
                out[k] = (st, json.loads(v) if v else None, e, a)
        return out

    # -- calls --------------------------------------------------------------------------------------------
    async def call(self, caller: CachedCaller, req: ChatRequest) -> tuple[Completion, str, bool]:
        """A cached call; a cache miss spends one unit of the --max-calls budget first."""
        key = caller.key(req)
        hit = caller.lookup(key)
        if hit is not None:
            caller.hits += 1
            return hit, key, True
        self.budget.take()
        # as CachedCaller.complete, without hashing the (long) judge prompt a second time
        c = await caller.backend.complete(req)
        caller.misses += 1
        caller.writer.call(key, caller.name, req.model, request_summary(req), c)
        return c, key, False

    async def call_json(self, caller: CachedCaller, key: str, model: str, tag: str,
                        compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        hit = caller.lookup(key)
        if hit is None:
            self.budget.take()
        return await caller.cached_json(key, model, json.dumps({"tag": tag}), compute)

    # -- responses ----------------------------------------------------------------------------------------
    def responses(self) -> dict[str, dict[str, tuple[str, Any, str | None]]]:
        """side -> speech id -> (status, text or None, error): ok / failed / pending / missing."""
        out: dict[str, dict[str, tuple]] = {}
        for side, c in self._sides():
            if c.responses:
                f = self.files[side]
                out[side] = {sid: ("ok", f[sid], None) if f.get(sid) else
                             ("missing", None, "no response in the file") for sid, _ in self.speeches}
                continue
            keys = {sid: self.gen_key(c, text) for sid, text in self.speeches}
            stored = self.items(list(keys.values()))
            out[side] = {}
            for sid, k in keys.items():
                st = stored.get(k)
                out[side][sid] = ("pending", None, None) if st is None else (st[0], st[1], st[2])
        return out

    async def stage_generate(self) -> dict[str, int]:
        counts = {"done_before": 0, "generated": 0, "cached": 0, "failed": 0, "over_budget": 0}
        writer = EvalWriter(self.store)
        work: list[tuple[SideConfig, str, str, str]] = []
        for _, c in self._sides():
            if c.responses:
                continue
            keys = [(sid, text, self.gen_key(c, text)) for sid, text in self.speeches]
            stored = self.items([k for *_, k in keys])
            for sid, text, k in keys:
                if stored.get(k, ("",))[0] == "ok":
                    counts["done_before"] += 1
                else:
                    work.append((c, sid, text, k))
        callers: dict[str, CachedCaller] = {}
        backends = {c.backend for _, c in self._sides() if c.backend}
        concurrency = sum(in_flight(self.cfg.backends[b]) for b in backends) or 1

        async def one(item: tuple) -> None:
            c, sid, text, key = item
            try:
                if c.backend not in callers:
                    callers[c.backend] = CachedCaller(self.store, writer, c.backend, self.backend(c.backend))
                try:
                    comp, ck, cached = await self.call(callers[c.backend], self.gen_request(c, text))
                except OverBudget:
                    counts["over_budget"] += 1
                    return
                except BackendError as e:
                    counts["failed"] += 1
                    writer.add("eval_items", (key, "gen", "failed", None, str(e)[:2000], 1, "[]", time.time()))
                    return
                reply = comp.text.strip()
                value = {"text": reply, "completion_tokens": comp.completion_tokens,
                         "prompt_tokens": comp.prompt_tokens, "side": c.name}
                status = "ok" if reply else "failed"
                counts["failed" if not reply else "cached" if cached else "generated"] += 1
                writer.add("eval_items", (key, "gen", status, json.dumps(value) if reply else None,
                                          None if reply else "empty reply", 1, json.dumps([ck]), time.time()))
            finally:
                bar.advance()

        with self.progress.task("generate", total=len(work)) as bar:
            try:
                await run_pool(iter(work), one, concurrency)
            finally:
                writer.commit()
        return counts

    # -- judging ------------------------------------------------------------------------------------------
    def judge_plan(self, resp: dict, kind: str, chunk: int = 500) -> Iterator[tuple]:
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
                texts = {side: _text(resp[side][sid]) for side in SIDES}
                if kind == "verdict" and texts["policy"] and texts["reference"]:
                    pt, rt = texts["policy"], texts["reference"]
                    items.append((self.verdict_key(speech, pt, rt), sid, "policy_first", speech, pt, rt))
                    items.append((self.verdict_key(speech, rt, pt), sid, "reference_first", speech, rt, pt))
                elif kind == "score" and self.cfg.scores is not None:
                    items += [(self.score_key(speech, t), sid, side, speech, t) for side, t in texts.items() if t]
            stored = self.items([it[0] for it in items])
            for it in items:
                if stored.get(it[0], ("",))[0] == "ok":
                    self.counts[done_key] += 1
                    self.on_done()
                else:
                    yield it

    def planned(self, resp: dict, kind: str) -> int:
        """How many items of ``kind`` the plan holds (done or not): the progress bar's total."""
        texts = [[_text(resp[side][sid]) for side in SIDES] for sid, _ in self.speeches]
        if kind == "verdict":
            return 2 * sum(all(t) for t in texts)
        return sum(bool(x) for t in texts for x in t) if self.cfg.scores is not None else 0

    async def stage_judge(self) -> dict[str, int]:
        from .stages import judge_scores, judge_verdicts

        resp = self.responses()
        counts = await judge_verdicts(self, self.judge_plan(resp, "verdict"), self.planned(resp, "verdict"))
        counts["verdicts_done_before"] = self.counts["verdicts_done_before"]
        if self.cfg.scores is not None:
            counts.update(await judge_scores(self, self.judge_plan(resp, "score"), self.planned(resp, "score")))
            counts["scores_done_before"] = self.counts["scores_done_before"]
        return counts

    # -- results ------------------------------------------------------------------------------------------
    def collect(self) -> list[dict[str, Any]]:
        """One record per speech with everything stored for it: responses, both verdicts, both score sets."""
        resp = self.responses()
        rows: list[dict[str, Any]] = []
        keys: dict[str, list[str]] = {}
        for sid, speech in self.speeches:
            row: dict[str, Any] = {"speech_id": sid, "speech": speech}
            texts = {}
            for side in SIDES:
                st, val, err = resp[side][sid]
                t = val if isinstance(val, str) else (val or {}).get("text")
                texts[side] = t
                row[side] = {"status": st, "text": t, "error": err,
                             "completion_tokens": val.get("completion_tokens") if isinstance(val, dict) else None}
            if texts["policy"] and texts["reference"]:
                row["_vk"] = {"policy_first": self.verdict_key(speech, texts["policy"], texts["reference"]),
                              "reference_first": self.verdict_key(speech, texts["reference"], texts["policy"])}
            if self.cfg.scores is not None:
                row["_sk"] = {s: self.score_key(speech, texts[s]) for s in SIDES if texts[s]}
            rows.append(row)
            keys[sid] = list(row.get("_vk", {}).values()) + list(row.get("_sk", {}).values())
        stored = self.items([k for ks in keys.values() for k in ks])
        for row in rows:
            vk, sk = row.pop("_vk", {}), row.pop("_sk", {})
            for order in ORDERS:
                it = stored.get(vk[order]) if order in vk else None
                row[order] = _item(it) | ({"verdict": (it[1] or {}).get("winner"),
                                           "rationale": (it[1] or {}).get("rationale", "")} if it else {})
            for side in SIDES:
                it = stored.get(sk[side]) if side in sk else None
                row[side]["scores"] = (it[1] or {}).get("scores") if it and it[0] == "ok" else None
                row[side]["score_status"] = _item(it)["status"] if side in sk else "none"
                row[side]["score_error"] = it[2] if it else None
        return rows


def _text(state: tuple) -> str | None:
    """The response text of a ``responses()`` entry when it is ok (a file side stores text, a model side a dict)."""
    if state[0] != "ok":
        return None
    return state[1] if isinstance(state[1], str) else state[1]["text"]


def _item(it: tuple | None) -> dict[str, Any]:
    if it is None:
        return {"status": "pending", "error": None, "attempts": 0}
    return {"status": it[0], "error": it[2], "attempts": it[3]}


# -- orchestration --------------------------------------------------------------------------------------------
def open_evaluation(config: str | Path | EvalConfig, overrides: Iterable[str] = (), base_dir: Path | None = None,
                    max_calls: int | None = None, progress: bool = False) -> Evaluation:
    cfg = config if isinstance(config, EvalConfig) else load_yaml_config(EvalConfig, config, list(overrides))
    return Evaluation(cfg, base_dir or Path.cwd(), StageProgress(enabled=progress), CallBudget(max_calls))


async def run_stages(ev: Evaluation) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        gen = await ev.stage_generate()
        t1 = time.perf_counter()
        jud = await ev.stage_judge()
    finally:
        await ev.aclose()
    return {"generate": gen, "judge": jud,
            "wall_s": {"generate": round(t1 - t0, 2), "judge": round(time.perf_counter() - t1, 2)}}


def evaluate(ev: Evaluation, calls: bool = True) -> dict[str, Any]:
    """Run what is missing (``calls=False``: nothing) and rebuild results.json, report.html and charts."""
    from .report import write_report

    t0 = time.perf_counter()
    counts = asyncio.run(run_stages(ev)) if calls else {}
    results = write_report(ev, counts)
    results["timing"] = {"wall_s": round(time.perf_counter() - t0, 3)}
    return results


# -- CLI ------------------------------------------------------------------------------------------------------
@click.command("evaluate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o speeches.n=20 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print calls and tokens the run would spend; call nothing.")
@click.option("--max-calls", type=click.IntRange(min=0), default=None,
              help="Stop after N model calls (cached answers are free); rerun to continue.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def evaluate_cmd(config: str, overrides: tuple[str, ...], dry_run: bool, max_calls: int | None, progress: bool) -> None:
    """Compare a policy with a reference: win rates in both orders, LC win rate, principle scores, safety."""
    from rich.console import Console

    from .report import print_dry_run, print_summary
    from .stages import dry_run as estimate

    console = Console()
    ev = open_evaluation(config, overrides, max_calls=max_calls, progress=progress)
    try:
        if dry_run:
            print_dry_run(console, estimate(ev))
            return
        results = evaluate(ev)
        print_summary(console, results)
        console.print(f"report: {ev.dir / 'report.html'}")
    finally:
        ev.close()


@click.command("leaderboard")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="leaderboard", show_default=True,
              help="Folder for leaderboard.json and leaderboard.html.")
@click.option("--rebuild", is_flag=True, help="Recompute each results.json from its cache first (no model calls).")
def leaderboard_cmd(dirs: tuple[str, ...], out_dir: str, rebuild: bool) -> None:
    """One table of several evaluations, from their stored results: no model is called."""
    from rich.console import Console

    from .report import build_leaderboard

    build_leaderboard([Path(d) for d in dirs], Path(out_dir), rebuild=rebuild, console=Console())
