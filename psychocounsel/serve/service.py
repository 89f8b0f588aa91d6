"""The drafting service behind every route: gate, draft, check, rank, remember, decide.

    service = DraftService(config, store)                 # backend and reward model from the config
    page = await service.draft(clinician, message, history, n, client_id)
    await service.decide(clinician, set_id, index, "approve", final_text, override=False)

The pages (``app.py``), the chat API (``openai_api.py``) and the bench all call this, so the gate they go
through is one piece of code. A request the service refuses raises ``Refused(status, message)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..backends import make_backend
from ..backends.base import Backend, ChatRequest, Completion, Sampling
from ..errors import UserError
from ..rubric.prompts import load_prompt
from ..training.scoring import Scorer, as_heads, load_scorer
from .config import ServeConfig
from .decisions import DraftMemory, DraftPage, decision_kind, edit_distance
from .drafts import Style, draft_request, generate, rank, style_flags
from .gate import Gate, check_draft, gate_message, gate_reply, safety_instruction
from .store import Clinician, ServeStore

ROLES = {"client": "user", "user": "user", "counselor": "assistant", "counsellor": "assistant",
         "therapist": "assistant", "clinician": "assistant", "assistant": "assistant"}


class Refused(Exception):
    """A request the service will not do, with the HTTP status and the one line to show."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_history(text: str) -> list[tuple[str, str]]:
    """The conversation so far, as pasted: turns start with "Client:" or "Counselor:" (also Therapist,
    Clinician); a line without a label continues the turn before it. Text with no labels at all is one earlier
    client turn."""
    turns: list[list[str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        head, sep, rest = line.partition(":")
        role = ROLES.get(head.strip().lower()) if sep else None
        if role is not None:
            turns.append([role, rest.strip()])
        elif turns:
            turns[-1][1] = (turns[-1][1] + "\n" + line).strip()
        elif line.strip():
            turns.append(["user", line.strip()])
    return [(r, t) for r, t in turns if t]


def screened_text(history: Sequence[tuple[str, str]], message: str) -> str:
    """Every client turn, earlier ones too: risk said three messages ago still counts."""
    return "\n\n".join([t for r, t in history if r == "user"] + [message])


def open_backend(cfg: ServeConfig) -> Backend:
    """The deployment's backend, built at start so that a misconfigured one is a one-line error then, not a
    failed draft in a clinician's first request: an OpenAI server's key variable, a local device that must
    exist, a local model's files (looked up; no weights are loaded until the first draft)."""
    backend = make_backend(cfg.backend)
    if cfg.backend.type == "local":
        from ..backends.local_models import resolve_model

        resolve_model(cfg.model)
    return backend


class DraftService:
    """One deployment's drafting: the config, the store, the backend, the optional reward model, the memory."""

    def __init__(self, cfg: ServeConfig, store: ServeStore, *, backend: Backend | None = None,
                 scorer: Scorer | None = None):
        self.cfg, self.store = cfg, store
        self.prompt = load_prompt(cfg.prompt)
        self._backend = backend
        if scorer is None and cfg.reward_model:
            try:
                scorer = load_scorer(cfg.reward_model, device=cfg.reward_device)
            except UserError as e:  # the deployment file's field, then what is wrong with the checkpoint
                raise UserError(f"reward_model: {e}") from None
        self.scorer = scorer
        self.memory = DraftMemory(cfg.policy.memory_minutes * 60)
        self._score_lock = threading.Lock()  # one forward pass at a time: bounded memory, no torch thread fights
        self._scrub_lock = threading.Lock()
        self._last_purge = 0.0

    @property
    def backend(self) -> Backend:
        if self._backend is None:  # lazily: a local model loads on the first draft, not at import
            self._backend = make_backend(self.cfg.backend)
        return self._backend

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()

    # ------------------------------------------------------------------ pieces

    def _scrub_now(self, texts: list[str]) -> list[str]:
        from ..dataset.pii.scrub import scrub

        with self._scrub_lock:
            return [scrub(t)[0] for t in texts]

    async def outbound(self, texts: list[str]) -> list[str]:
        """The texts as they may leave for the backend: PII masked when the policy says so (remote backends)."""
        if not self.cfg.scrubs:
            return texts
        return await run_in_threadpool(self._scrub_now, texts)

    def gate(self, history: Sequence[tuple[str, str]], message: str) -> Gate:
        return gate_message(screened_text(history, message), self.cfg.locale, self.cfg.learned_screen)

    def _rank(self, prompt: str, texts: list[str], blocked: list[bool]):
        with self._score_lock:
            return rank(self.scorer, prompt, texts, blocked)

    def score_rows(self, prompts: list[str], responses: list[str]) -> dict[str, Any]:
        """The reward model's heads for (prompt, response) rows (the reward API); needs a reward model."""
        if self.scorer is None:
            raise Refused(503, "this deployment has no reward model")
        with self._score_lock:
            raw = self.scorer.score_batch(prompts, responses)
        return as_heads(raw, len(prompts), getattr(self.scorer, "name", "reward model"))

    def purge_if_due(self) -> None:
        """Erase stored client text past its retention, at most once an hour (a cheap indexed UPDATE)."""
        if self.cfg.policy.storage and time.monotonic() - self._last_purge > 3600:
            self._last_purge = time.monotonic()
            self.store.purge(self.cfg.policy.retention_days)

    # ------------------------------------------------------------------ drafting

    async def draft(self, clinician: Clinician, message: str, history: Sequence[tuple[str, str]] = (), n: int | None = None,
                    client_id: str | None = None) -> dict[str, Any]:
        """Screen, draft N, check each, rank; remember the page; return its view."""
        cfg = self.cfg
        n = cfg.n_default if n is None else n
        if not 1 <= n <= cfg.n_max:
            raise Refused(422, f"n must be 1 to {cfg.n_max}")
        if not message.strip():
            raise Refused(422, "message is empty: paste the client's message")
        if len(message) + sum(len(t) for _, t in history) > cfg.max_message_chars:
            raise Refused(413, f"message and conversation are longer than {cfg.max_message_chars} characters")
        if cfg.policy.storage:
            if not client_id:
                raise Refused(422, "client_id is required: this deployment stores client text")
            if not self.store.has_consent(client_id):
                raise Refused(409, f"no consent recorded for client {client_id!r}: record it before drafting")
        gate = self.gate(history, message)  # the gate sees the client's own words, before any scrubbing
        style = Style(**clinician.style)
        sent = await self.outbound([t for _, t in history] + [message])
        turns = tuple(zip([r for r, _ in history] + ["user"], sent))
        requests = [draft_request(turns, system=self.prompt.text, style=style, instruction=safety_instruction(gate),
                                  model=cfg.model, sampling=cfg.sampling, seed=i, tag=self.prompt.version)
                    for i in range(n)]
        results = await generate(self.backend, requests)
        ok = [r for r in results if isinstance(r, Completion)]
        failed = [str(r) for r in results if not isinstance(r, Completion)]
        if not ok:
            raise Refused(502, f"the drafting model failed on every draft: {failed[0]}")
        texts = [c.text.strip() for c in ok]
        checks = [check_draft(gate, t) for t in texts]
        blocked = [c.blocked for c in checks]
        ranking = await run_in_threadpool(self._rank, message, texts, blocked)
        rows = [{"overall": r.overall, "flags": sorted({f["kind"] for f in c.flags()}), "blocked": c.blocked,
                 "text": t if cfg.policy.storage else None, "principles": r.principles, "reason": r.reason,
                 "finish_reason": comp.finish_reason} for r, c, t, comp in zip(ranking, checks, texts, ok)]
        self.purge_if_due()
        stored = cfg.policy.storage
        history_text = "\n".join(f"{r}: {t}" for r, t in history) if stored and history else None
        try:
            set_id = self.store.add_draft_set(clinician.id, gate.tier, rows, self.scorer is not None,
                                              client_id=client_id if stored else None,
                                              message=message if stored else None, history=history_text,
                                              failed=failed)
        except UserError as e:  # consent withdrawn between the check and the write
            raise Refused(409, str(e)) from None
        self.memory.put(set_id, DraftPage(clinician.id, gate, message, texts, failed))
        self.store.audit(f"clinician:{clinician.id}", "draft", set_id=set_id, n=len(texts), tier=gate.tier,
                         blocked=sum(blocked), failed=len(failed))
        drafts = [{"index": i, "text": t, "rank": r.rank, "overall": r.overall, "principles": r.principles,
                   "reason": r.reason, "flags": c.flags() + style_flags(style, t), "blocked": c.blocked,
                   "finish_reason": comp.finish_reason}
                  for i, (t, r, c, comp) in enumerate(zip(texts, ranking, checks, ok))]
        return self._view(set_id, gate, message, drafts, failed, [], self.scorer is not None)

    def _view(self, set_id: int, gate: Gate, message: str | None, drafts: list[dict[str, Any]], failed: list[str],
              decisions: list[dict[str, Any]], ranked: bool) -> dict[str, Any]:
        show = set(self.cfg.policy.show)
        shown = []
        for d in sorted(drafts, key=lambda d: d["rank"]):
            d = dict(d)
            if "scores" not in show:
                d["overall"] = None
            if "principles" not in show:
                d["principles"] = {}
            if "reasons" not in show:
                d["reason"] = ""
            if "flags" not in show:  # a blocked draft's safety flags are always shown
                d["flags"] = [f for f in d["flags"] if f["severity"] == "high"] if d["blocked"] else []
            d["decision"] = next((x for x in reversed(decisions) if x["idx"] == d["index"]), None)
            shown.append(d)
        return {"set_id": set_id, "tier": gate.tier, "risk_panel": gate.panel(), "message": message,
                "ranked": ranked,
                "ranking_note": ("ranked by the reward model; a draft that fails a safety check is never above one "
                                 "that passes") if ranked else "unranked: no reward model is configured",
                "drafts": shown, "failed": failed, "stored": self.cfg.policy.storage,
                "safety_instruction": bool(safety_instruction(gate))}

    def _page(self, clinician: Clinician, set_id: int) -> tuple[dict[str, Any], DraftPage | None]:
        row = self.store.draft_set(clinician.id, set_id)
        if row is None:
            raise Refused(404, "No such draft set in your workspace.")
        page = self.memory.get(set_id, clinician.id)
        if page is None and row["message"] is not None:  # stored: rebuild the page from the database
            history = parse_history(row["history"] or "")
            texts = [d["text"] or "" for d in row["drafts"]]
            page = DraftPage(clinician.id, self.gate(history, row["message"]), row["message"], texts, row["failed"])
            self.memory.put(set_id, page)
        return row, page

    async def view(self, clinician: Clinician, set_id: int) -> dict[str, Any]:
        row, page = self._page(clinician, set_id)
        if page is None:
            raise Refused(410, "These drafts were kept in memory only and have expired (storage is off).")
        style = Style(**clinician.style)
        checks = [check_draft(page.gate, t) for t in page.texts]
        blocked = [c.blocked for c in checks]
        stored = {d["idx"]: d for d in row["drafts"]}
        ranks = sorted(range(len(page.texts)), key=lambda i: (blocked[i], -(stored[i]["overall"] or 0.0), i))
        place = {i: k + 1 for k, i in enumerate(ranks)}
        # Scores, reasons and finish reasons as the first page showed them (kept in the drafts rows: no client
        # text); flags are checked again, since the checks and the clinician's style may have changed since.
        drafts = [{"index": i, "text": t, "rank": place[i], "overall": stored[i]["overall"],
                   "principles": stored[i]["principles"], "reason": stored[i]["reason"],
                   "flags": c.flags() + style_flags(style, t), "blocked": c.blocked,
                   "finish_reason": stored[i]["finish_reason"]} for i, (t, c) in enumerate(zip(page.texts, checks))]
        # ranked as the set was drafted, even if the deployment has since changed its reward model
        return self._view(set_id, page.gate, page.message, drafts, page.failed, row["decisions"], bool(row["ranked"]))

    # ------------------------------------------------------------------ deciding

    async def decide(self, clinician: Clinician, set_id: int, index: int, action: str, final_text: str | None = None,
                     override: bool = False) -> dict[str, Any]:
        """Record approve (as accept or edit) or reject. Approving text that fails a safety check needs
        ``override``; the override is written to the audit log. Nothing is sent to anyone."""
        if action not in ("approve", "reject"):
            raise Refused(422, "action must be approve or reject")
        _, page = self._page(clinician, set_id)
        if page is None:
            raise Refused(410, "These drafts were kept in memory only and have expired (storage is off).")
        if not 0 <= index < len(page.texts):
            raise Refused(404, "No such draft in this set.")
        draft = page.texts[index]
        final = draft if final_text is None else final_text.replace("\r\n", "\n").strip()  # forms send CRLF
        check = check_draft(page.gate, final)
        kinds = sorted({f["kind"] for f in check.flags()})
        used_override = False
        if action == "approve":
            if not final:
                raise Refused(422, "the approved text is empty")
            if check.blocked and not override:
                raise Refused(409, "This text fails a safety check (" + ", ".join(kinds) + "); approving it "
                              "needs an explicit override, which is logged.")
            used_override = check.blocked
        kind = decision_kind(action, draft, final)
        distance = None if kind == "reject" else await run_in_threadpool(edit_distance, draft, final)
        keep = self.cfg.policy.storage and kind != "reject"
        did = self.store.add_decision(clinician.id, set_id, index, kind, distance, used_override,
                                      final if keep else None)
        actor = f"clinician:{clinician.id}"
        self.store.audit(actor, "decision", set_id=set_id, draft=index, decision_id=did, kind=kind,
                         edit_distance=distance)
        if used_override:
            self.store.audit(actor, "safety_override", set_id=set_id, draft=index, decision_id=did,
                             flags=",".join(kinds)[:64])
        return {"decision_id": did, "set_id": set_id, "index": index, "action": kind, "edit_distance": distance,
                "override": used_override, "flags": check.flags(), "sent_to_client": False}

    # ------------------------------------------------------------------ the chat API's path

    async def complete_chat(self, actor: str, messages: list[tuple[str, str]], n: int, sampling: Sampling,
                            model: str) -> tuple[Gate, list[dict[str, Any]]]:
        """The chat API: gate the client turns, draft under the safety instruction at risk, re-check each
        choice; a choice that fails is replaced by the gate's reply (finish_reason content_filter)."""
        client = [(r, t) for r, t in messages if r != "system"]
        if not client or client[-1][0] != "user":
            raise Refused(400, "the last message must be the client's (role user)")
        gate = self.gate(client[:-1], client[-1][1])
        self.store.count_gate(gate.tier)
        instruction = safety_instruction(gate)
        has_system = any(r == "system" for r, _ in messages)
        sent = await self.outbound([t for _, t in messages])
        turns = [(r, t) for (r, _), t in zip(messages, sent)]
        prefix = () if has_system else (("system", self.prompt.text),)
        if instruction:
            prefix += (("system", instruction),)
        requests = [ChatRequest(model, (*prefix, *turns), sampling=Sampling(
            sampling.temperature, sampling.top_p, sampling.max_tokens, (sampling.seed or 0) + i), tag="chat-api")
            for i in range(n)]
        results = await generate(self.backend, requests)
        choices = []
        for r in results:
            if not isinstance(r, Completion):
                raise Refused(502, f"the model failed: {r}")
            check = check_draft(gate, r.text)
            if check.blocked:
                kinds = sorted({f["kind"] for f in check.flags()})
                choices.append({"text": gate_reply(gate, kinds), "finish_reason": "content_filter",
                                "withheld": kinds, "usage": r})
            else:
                choices.append({"text": r.text, "finish_reason": r.finish_reason or "stop", "withheld": [],
                                "usage": r})
        self.store.audit(actor, "chat_completion", tier=gate.tier, n=n,
                         withheld=sum(bool(c["withheld"]) for c in choices))
        return gate, choices

