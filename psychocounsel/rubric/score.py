"""The principle judge's pure core: prompts in, scores out. No I/O and no model calls (the session does those).

``PrincipleScorer`` is the one judge of therapist responses on the principles, used by the data pipeline's
judge stage and by the evaluation's score stage alike. Built once per judge configuration (principles,
prompt, model, sampling, mode), it renders the rubric once, then per (speech, response) makes the
request(s) and turns the reply or the probabilities into scores, or into an error that is recorded as a
failure, never a score. Two modes:

- JSON mode (the paper, with GPT-4o): ONE call per response scores ALL principles and returns a JSON object
  ``{"rationale": ..., "empathy": 4, ...}``. ``PrincipleScorer.request`` builds the call,
  ``judge_response_format`` asks OpenAI-compatible servers for exactly that shape (structured output), and
  ``parse_judgment`` reads the reply from any server, strict about the scores: a reply it cannot read is a
  ``JudgeParseError``, never a default score.
- G-Eval mode (local models): a shared prefix (client speech + response) and one short suffix per principle
  ending in "Score (1-5):"; the backend reads the probabilities of the next token "1".."5" and the score is
  their expectation (``expected_score``). A probability row per principle, five numbers each, or it is an
  error (``geval_scores``). Small judges then give fine-grained but compressed scores, which is what
  ``calibrate`` is for.

``overall`` is the weighted mean of a response's principle scores (equal weights in the paper).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from ..backends.base import ChatRequest, Sampling
from ..config import weight_problem
from ..errors import UserError
from .principles import Principle, PrincipleSet
from .prompts import Prompt, Template
from .replies import ConflictingKeys, json_objects

SCORES = (1, 2, 3, 4, 5)
# The next tokens a G-Eval judge is scored on; part of every G-Eval call key.
SCORE_CHOICES = [str(s) for s in SCORES]
SCORE_CUE = "Score (1-5):"
GEVAL_RATIONALE = "G-Eval expected score from next-token probabilities"
RATIONALE_ALIASES = ("rationale", "reasoning", "explanation", "justification")
# Keys under which chatty judges put a score inside a per-principle object: {"empathy": {"score": 4, ...}}.
SCORE_FIELDS = ("score", "rating", "value")


class JudgeParseError(ValueError):
    """A judge reply that cannot be read as scores. ``reason`` is short enough to store per failure."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ParsedJudgment:
    scores: dict[str, int]  # principle key -> 1..5, in the principle set's order
    rationale: str


def retry_sampling(s: Any, attempt: int) -> Sampling:
    """Sampling for attempt ``attempt`` of a judge call: a retry must be able to differ, so a new seed, and
    some temperature (0.5) if the first try was greedy. Shared by the principle and the pairwise judge."""
    temp = s.temperature if attempt == 0 else max(s.temperature, 0.5)
    return Sampling(temp, s.top_p, s.max_tokens, (s.seed or 0) + attempt)


# --- prompts ----------------------------------------------------------------------------------------------


def format_rubric(principle: Principle, indent: str = "") -> str:
    return "\n".join(f"{indent}{score} = {text}" for score, text in sorted(principle.rubric.items()))


def format_principles(principles: PrincipleSet) -> str:
    """The principle list shown to a JSON judge: key (the JSON field), name, definition, anchors."""
    blocks = []
    for i, p in enumerate(principles, 1):
        blocks.append(f"{i}. {p.key} ({p.name})\n   Definition: {p.definition}\n"
                      + format_rubric(p, indent="   "))
    return "\n\n".join(blocks)


def json_template(principles: PrincipleSet) -> str:
    """The reply shape spelled out for judges without structured output. Rationale first: a judge that
    names strengths and weaknesses before scoring has a reason to hand when it picks each number."""
    lines = ['  "rationale": "<one or two sentences>"'] + [f'  "{k}": <1-5>' for k in principles.keys]
    return "{\n" + ",\n".join(lines) + "\n}"


def judge_response_format(principles: PrincipleSet) -> dict[str, Any]:
    """OpenAI structured-output ``response_format``: the reply can only be the object the parser expects."""
    properties: dict[str, Any] = {"rationale": {"type": "string"}}
    for k in principles.keys:
        properties[k] = {"type": "integer", "enum": list(SCORES)}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "counseling_judgment",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


# --- parsing ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)  # replies repeat the same few keys; the regex was 2/3 of parsing (26 -> 8 us a reply)
def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def _key_map(principles: PrincipleSet) -> dict[str, str]:
    """Spellings a judge uses for a principle ("empathy", "Empathy", its full name) -> the key."""
    out = {}
    for p in principles:
        out[_norm(p.name)] = p.key
        out[_norm(p.key)] = p.key
    return out


def _unwrap(obj: dict, keymap: dict[str, str]) -> dict:
    """{"scores": {...}, "rationale": ...} -> one flat object, when the principle keys sit one level down."""
    if any(isinstance(k, str) and _norm(k) in keymap for k in obj):
        return obj
    inner = [v for v in obj.values()
             if isinstance(v, dict) and any(_norm(k) in keymap for k in v)]
    if len(inner) == 1:
        return {**{k: v for k, v in obj.items() if not isinstance(v, dict)}, **inner[0]}
    return obj


def _score(key: str, value: Any, depth: int = 0) -> int:
    if isinstance(value, dict) and depth == 0:
        for f in SCORE_FIELDS:
            if f in value:
                return _score(key, value[f], depth + 1)
        raise JudgeParseError(f"{key}: object without a score field")
    if isinstance(value, bool) or value is None:
        raise JudgeParseError(f"{key}: {json.dumps(value)} is not a score")
    if isinstance(value, str):
        # "4" and "4/5" are unambiguous; words ("four") and ranges ("3-4") are not.
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*5)?\s*", value)
        if not m:
            raise JudgeParseError(f"{key}: {value[:20]!r} is not a number")
        value = float(m.group(1))
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise JudgeParseError(f"{key}: {value} is not an integer")
        value = int(value)
    if not isinstance(value, int):
        raise JudgeParseError(f"{key}: {type(value).__name__} is not a score")
    if value not in SCORES:
        raise JudgeParseError(f"{key}: {value} is out of range 1-5")
    return value


def parse_judgment(text: str, principles: PrincipleSet) -> ParsedJudgment:
    """Read a JSON-mode judge reply. Raises ``JudgeParseError`` rather than guess any score.

    Accepted: plain JSON, ```json fences, chatter around the object, scores as 4, "4", "4/5", 4.0 or
    {"score": 4, ...}, principle names instead of keys, and scores nested under one wrapper key. When the
    reply holds several objects, the last one with the most principle keys wins (judges that correct
    themselves put the final answer last). A missing rationale reads as "" (it is never used in a score).
    A principle given two different scores, as one key twice or in two spellings, is an error.
    """
    return _read_judgment(text, principles, _key_map(principles))


def _read_judgment(text: str, principles: PrincipleSet, keymap: dict[str, str]) -> ParsedJudgment:
    if not isinstance(text, str) or not text.strip():
        raise JudgeParseError("empty reply")
    try:
        objects, error = json_objects(text)
    except ConflictingKeys as e:
        raise JudgeParseError(str(e)) from None
    best, best_hits = None, 0
    for obj in objects:
        obj = _unwrap(obj, keymap)
        hits = len({keymap[_norm(k)] for k in obj if isinstance(k, str) and _norm(k) in keymap})
        if hits and hits >= best_hits:
            best, best_hits = obj, hits
    if best is None:
        if error:
            raise JudgeParseError(f"invalid JSON: {error}")
        raise JudgeParseError("no JSON object with principle scores" if objects else "no JSON object")

    scores: dict[str, int] = {}
    for k, v in best.items():
        if not isinstance(k, str) or _norm(k) not in keymap:
            continue  # extra fields such as "overall" are ignored, never trusted
        key = keymap[_norm(k)]
        score = _score(key, v)
        if key in scores and scores[key] != score:
            raise JudgeParseError(f"{key}: two different scores ({scores[key]}, {score})")
        scores[key] = score
    missing = [k for k in principles.keys if k not in scores]
    if missing:
        raise JudgeParseError(f"missing keys: {', '.join(missing)}")

    rationale = ""
    for k, v in best.items():
        if isinstance(k, str) and _norm(k) in RATIONALE_ALIASES and v is not None:
            rationale = v.strip() if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            break
    return ParsedJudgment(scores={k: scores[k] for k in principles.keys}, rationale=rationale)


# --- overall score and calibration ------------------------------------------------------------------------


def check_weights(weights: dict[str, float], keys: list[str], field: str = "judge.weights") -> None:
    """Weights must name exactly the principle keys, each > 0 (``config.weight_problem``); ``field`` names
    the config field in the one-line error."""
    problem = weight_problem(weights, keys, field)
    if problem:
        raise UserError(problem)


def overall(scores: dict[str, float], weights: dict[str, float] | None = None) -> float:
    """Weighted mean of one response's principle scores; ``None`` = equal weights, as in the paper."""
    if not scores:
        raise ValueError("overall() of no scores")
    if weights is None:
        return sum(scores.values()) / len(scores)
    check_weights(weights, list(scores))
    total = sum(weights[k] for k in scores)
    return sum(weights[k] * s for k, s in scores.items()) / total


def calibrate(matrix: dict[str, list[float]],
              method: Literal["none", "zscore", "rank"] = "none") -> dict[str, list[float]]:
    """Rescale each principle's scores across the run, back onto 1-5, so weak judges still give pairs.

    ``matrix[key][i]`` is principle ``key``'s score for the run's i-th judged response. Why: a small judge's
    expected scores bunch together. The embedded 135M model as a G-Eval judge gave empathy 2.03
    (reflective), 1.82 (dismissive), 1.78 (harmful) on one example: no two differ by the paper's 1.0 gap,
    so raw scores yield no pairs. Calibration stretches the spread; it cannot fix the order: on 24
    hand-written good/bad pairs that judge prefers the good reply only 46% of the time
    (bench/bench_embedded_judge.py), so its pairs show the machinery working, not counseling quality.

    - "none": scores unchanged (a strong judge such as GPT-4o; the paper).
    - "zscore": 3 + (x - mean) / std per principle (population std), clipped to [1, 5]. The example above
      becomes 4.40, 2.48, 2.12. A principle with no spread maps to 3 everywhere.
    - "rank": 1 + 4 * rank / (n - 1), rank 0-based, ties get their average rank: the worst response of the
      run scores 1 and the best 5 (the example becomes 5, 3, 1). One response maps to 3.

    What it means: after calibration a score says how a response compares with the rest of THIS run, not
    how good it is on the rubric, so the gap rule ("overall differs by >= 1") picks pairs by relative
    quality, and scores from different runs (or different judges) are no longer comparable.
    """
    if method == "none":
        return {k: [float(x) for x in v] for k, v in matrix.items()}
    lengths = {len(v) for v in matrix.values()}
    if len(lengths) > 1:
        raise ValueError(f"calibrate: principles have different numbers of scores {sorted(lengths)}")
    for k, v in matrix.items():
        if any(not math.isfinite(x) for x in v):
            raise ValueError(f"calibrate: {k} has a non-finite score (drop failed judgments first)")
    if method == "zscore":
        return {k: _zscore(v) for k, v in matrix.items()}
    if method == "rank":
        return {k: _rank(v) for k, v in matrix.items()}
    raise ValueError(f"calibrate: unknown method {method!r} (none, zscore, rank)")


def _zscore(xs: list[float]) -> list[float]:
    if not xs:
        return []
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    # Spread below float noise means the judge did not tell these responses apart.
    if std <= 1e-12 * max(1.0, abs(mean)):
        return [3.0] * len(xs)
    return [min(5.0, max(1.0, 3.0 + (x - mean) / std)) for x in xs]


def _rank(xs: list[float]) -> list[float]:
    n = len(xs)
    if n == 1:
        return [3.0]
    order = sorted(range(n), key=lambda i: xs[i])
    ranks = [0.0] * n
    start = 0
    while start < n:
        end = start
        while end + 1 < n and xs[order[end + 1]] == xs[order[start]]:
            end += 1
        for j in range(start, end + 1):
            ranks[order[j]] = (start + end) / 2
        start = end + 1
    return [1.0 + 4.0 * r / (n - 1) for r in ranks]


# --- G-Eval -----------------------------------------------------------------------------------------------


def expected_score(probs: list[float]) -> float:
    """G-Eval score: sum(p_i * i) over the choices 1..5.

    Divided by sum(p): backends renormalise over the five digits already; doing it again keeps the result
    on 1-5 if one returns raw next-token probabilities (it is then the expectation given a digit answer).
    """
    if len(probs) != len(SCORES):
        raise ValueError(f"expected_score: need {len(SCORES)} probabilities (for 1..5), got {len(probs)}")
    if any(not math.isfinite(p) or p < 0 for p in probs):
        raise ValueError(f"expected_score: probabilities must be finite and >= 0, got {probs}")
    total = sum(probs)
    if total <= 0:
        raise ValueError("expected_score: probabilities sum to 0")
    return sum(p * s for p, s in zip(probs, SCORES)) / total


def geval_scores(principles: PrincipleSet, probs: list[list[float]]) -> dict[str, float]:
    """One expected score per principle, from the backend's per-suffix choice probabilities."""
    if len(probs) != len(principles):
        raise ValueError(f"geval_scores: {len(probs)} probability rows for {len(principles)} principles")
    return {p.key: expected_score(row) for p, row in zip(principles, probs)}


# --- the scorer -------------------------------------------------------------------------------------------

OPEN = ("speech", "response")  # what changes per request; everything else in a judge prompt is fixed


class PrincipleScorer:
    """One principle judge: a configuration rendered once, then requests and scores per (speech, response).

    ``sampling`` is any object with temperature, top_p, max_tokens and seed (a ``SamplingConfig``).
    ``structured``: ask the server for the reply's JSON schema (OpenAI structured output). A prompt that
    cannot serve the mode (a G-Eval prompt without a <<<suffix>>> section, a JSON prompt that never shows
    the speech) is a ``UserError`` here, before any call.
    """

    def __init__(self, principles: PrincipleSet, prompt: Prompt, model: str, sampling: Any,
                 mode: Literal["json", "geval"] = "json", max_attempts: int = 3, structured: bool = False):
        self.principles, self.prompt, self.model, self.sampling = principles, prompt, model, sampling
        self.mode, self.max_attempts = mode, max_attempts
        self.response_format = judge_response_format(principles) if structured and mode == "json" else None
        self._keymap = _key_map(principles)
        if mode == "geval":
            if "suffix" not in prompt.sections:
                raise UserError(f"{prompt.source or prompt.name}: judge mode 'geval' needs a G-Eval prompt with a "
                                "<<<suffix>>> section (e.g. judge.prompt: geval_v1)")
            prompt.require("user", *OPEN)
            self._messages = self._compile()
            # Each suffix continues the prefix's last user message (the local backend appends it there, then
            # opens the assistant turn), so it starts with a blank line and ends at the score cue.
            self.suffixes = ["\n\n" + prompt.render("suffix", name=p.name, key=p.key, definition=p.definition,
                                                     rubric=format_rubric(p)).rstrip() for p in principles]
        else:
            prompt.require(None if not prompt.sections else "user", *OPEN)
            self._messages = self._compile(principles=format_principles(principles),
                                           json_template=json_template(principles), keys=", ".join(principles.keys))
            self.suffixes = []

    def _compile(self, **fixed: str) -> list[tuple[str, Template]]:
        """(role, template) per message; a plain prompt file (no section markers) is one user message."""
        if not self.prompt.sections:
            return [("user", self.prompt.compile(None, OPEN, **fixed))]
        roles = [r for r in ("system", "user") if r in self.prompt.sections]
        return [(r, self.prompt.compile(r, OPEN, **fixed)) for r in roles]

    def messages(self, speech: str, response: str) -> list[dict[str, str]]:
        """The messages of a JSON-mode call, or the shared prefix of a G-Eval call."""
        return [{"role": r, "content": t.fill(speech=speech, response=response)} for r, t in self._messages]

    def request(self, speech: str, response: str, attempt: int = 0) -> ChatRequest:
        """Attempt ``attempt`` (0 first) of the JSON-mode call that scores ``response`` on every principle."""
        return ChatRequest(self.model, tuple((r, t.fill(speech=speech, response=response)) for r, t in self._messages),
                           sampling=retry_sampling(self.sampling, attempt), response_format=self.response_format,
                           tag=f"{self.prompt.version}#{attempt}")

    def parse(self, reply: str) -> ParsedJudgment:
        """The scores of a JSON-mode reply; ``JudgeParseError`` when it holds no readable score set."""
        return _read_judgment(reply, self.principles, self._keymap)

    def geval_prompt(self, speech: str, response: str) -> tuple[list[dict[str, str]], list[str]]:
        """The shared prefix and one suffix per principle: the backend encodes the prefix once and scores
        every suffix from its cache."""
        return self.messages(speech, response), self.suffixes

    def geval_scores(self, probs: Any) -> dict[str, float]:
        """Expected score per principle (4 decimals) from the backend's choice probabilities; a reply of the
        wrong shape (rows per principle, five numbers per row) raises ``ValueError``."""
        try:
            scores = geval_scores(self.principles, probs)
        except TypeError:
            raise ValueError(f"geval_scores: not one probability row per principle: {str(probs)[:80]}") from None
        return {k: round(v, 4) for k, v in scores.items()}

    def prompt_chars(self, speech_chars: int, response_chars: int) -> int:
        """Characters the judge reads for one response (G-Eval: the prefix and every suffix)."""
        per = {"speech": speech_chars, "response": response_chars}
        return (sum(t.fixed_chars + sum(per[n] for n in t.names) for _, t in self._messages)
                + sum(len(x) for x in self.suffixes))

    @property
    def max_completion_tokens(self) -> int:
        """Tokens a call may generate: none in G-Eval mode (it reads probabilities)."""
        return 0 if self.mode == "geval" else self.sampling.max_tokens
