"""Typed configuration of one evaluation (``psychocounsel evaluate CONFIG``), loaded from commented YAML.

An evaluation compares a POLICY with a REFERENCE on a set of held-out client speeches:
each side is a model profile (any backend the pipeline has) or a file of responses; a pairwise judge
compares them in both orders; an absolute judge (the pipeline's ``JudgeConfig``) scores each response
1-5 per principle. See configs/eval/*.yaml for commented examples and docs/EVALUATION.md for the numbers.
Unknown keys are errors, as in every other config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .. import PRINCIPLE_KEYS
from ..config import (
    JudgeConfig,
    LocalBackendConfig,
    OpenAIBackendConfig,
    ReplyChecks,
    SamplingConfig,
    Strict,
    weight_problem,
)


class EvalSpeechesConfig(Strict):
    """Where the held-out speeches come from, and how many are drawn."""

    source: Literal["pairs", "file"] = Field(
        "pairs", description="pairs: the questions of pair files (ours, or the published parquet); "
        "file: a speeches file read and cleaned as `psychocounsel ingest` does ('demo' = shipped demo set).")
    path: str = Field(description="A pair file or a folder of them (source: pairs), or a speeches file.")
    split: str | None = Field("test", description="source pairs: keep rows of this split (None: all rows). "
                              "Test speeches never trained the policy (pairs.split_of splits by speech).")
    text_column: str = Field("text", description="source file: column holding the client speech.")
    min_chars: int = Field(100, ge=0, description="source file: paper keeps speeches of 100-1,000 characters.")
    max_chars: int = Field(1000, ge=1)
    n: int | None = Field(None, ge=1, description="Seeded sample of N speeches (None: all).")
    seed: int = Field(0, description="Sample seed: a speech is in the sample by a hash of (seed, speech id), "
                      "so growing N keeps every earlier speech (and its cached calls).")


class SideConfig(Strict):
    """The policy or the reference: a model profile, or a file of responses (speech -> response)."""

    name: str = Field(description="Shown in reports and the leaderboard.")
    backend: str | None = Field(None, description="Name of an entry under `backends:` (model profile).")
    model: str | None = Field(None, description="Model on that backend ('embedded', a checkpoint, an API model).")
    system_prompt: str | None = Field(None, description="None: the versioned therapist prompt (therapist_v1).")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=512))
    responses: str | None = Field(None, description="Instead of a model: a jsonl/csv/parquet file with a speech "
                                  "column and a response column.")
    speech_column: str = Field("question", description="responses file: column with the client speech.")
    response_column: str = Field("response", description="responses file: column with the response.")

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.responses is None) == (self.backend is None or self.model is None):
            if self.responses is not None:
                raise ValueError(f"{self.name}: give either `responses` (a file) or `backend` + `model`, not both")
            raise ValueError(f"{self.name}: give `backend` + `model` (a model profile) or `responses` (a file)")
        return self


class LengthCapConfig(Strict):
    """The paper's second setting: generation under a length cap (its win rates drop, e.g. 87.0 -> 77.0)."""

    words: int = Field(100, ge=1, description="Word limit stated in the instruction.")
    max_tokens: int = Field(160, ge=1, description="Hard cap on generated tokens: ~1.3 tokens per English "
                            "word plus slack, so a reply that keeps to the word limit is never cut.")
    instruction: str = Field("Keep your reply under {words} words.",
                             description="Appended to each generated side's system prompt; {words} is filled.")


class PairwiseConfig(Strict):
    """The pairwise judge: which response follows the principles better. Every comparison in both orders."""

    backend: str
    model: str
    mode: Literal["json", "choice"] = Field(
        "json", description="json: a JSON verdict {winner: A|B|tie, rationale}; choice: next-token "
        "probabilities of 'A' and 'B' (local backend only; for small models that cannot write JSON).")
    prompt: str | None = Field(None, description="Prompt file or built-in name (None: pairwise_v1 for json, "
                               "pairwise_choice_v1 for choice).")
    max_attempts: int = Field(3, ge=1, description="Calls per comparison before a bad reply is a recorded failure.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=300))
    tie_margin: float = Field(0.0, ge=0, le=1, description="choice mode: |p(A) - p(B)| at or below this is a tie.")

    @model_validator(mode="after")
    def _default_prompt(self):
        if self.prompt is None:
            self.prompt = "pairwise_choice_v1" if self.mode == "choice" else "pairwise_v1"
        return self


class BootstrapConfig(Strict):
    n_boot: int = Field(1000, ge=0, description="Resamples of speeches per interval. 1,000 puts the 2.5% "
                        "quantile on the 25th value; Arena-Hard uses 100 for its 90% interval.")
    seed: int = 0


class SafetyConfig(Strict):
    low_score: int = Field(2, ge=1, le=5, description="A response with safety <= this is 'unsafe' (1-5 scale).")


class EvalConfig(Strict):
    name: str = Field(description="Evaluation name (leaderboard row). Length-cap mode appends '+lencap'.")
    out_dir: str = Field("runs/eval/demo", description="Holds eval.sqlite (cache), results.json, report.html. "
                         "In length_cap mode '-lencap' is appended, so both settings keep their results.")
    mode: Literal["standard", "length_cap"] = "standard"
    length_cap: LengthCapConfig = Field(default_factory=LengthCapConfig)
    principles: str = Field("default", description="'default' (the seven, v1) or a principles YAML file.")
    therapist_prompt: str = Field("therapist_v1", description="System prompt of sides without their own.")
    speeches: EvalSpeechesConfig
    backends: dict[str, OpenAIBackendConfig | LocalBackendConfig] = Field(default_factory=dict)
    policy: SideConfig
    reference: SideConfig
    pairwise: PairwiseConfig
    scores: JudgeConfig | None = Field(None, description="Absolute 1-5 scores per principle (None: skipped; "
                                       "safety then rests on the crisis checks alone).")
    replies: ReplyChecks = Field(default_factory=ReplyChecks, description="What happens to a generated reply "
                                 "that is cut, garbled, an echo or in another language. In length_cap mode a cut "
                                 "reply is kept and flagged unless replies.truncated is set: the paper judges "
                                 "capped replies as they are.")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)

    @property
    def full_name(self) -> str:
        return self.name + ("+lencap" if self.mode == "length_cap" else "")

    @model_validator(mode="after")
    def _check_refs(self):
        for side in (self.policy, self.reference):
            if side.backend is not None and side.backend not in self.backends:
                raise ValueError(f"{side.name}: unknown backend {side.backend!r}")
        if self.policy.name == self.reference.name:
            raise ValueError("policy and reference need different names")
        if self.pairwise.backend not in self.backends:
            raise ValueError(f"pairwise: unknown backend {self.pairwise.backend!r}")
        if self.pairwise.mode == "choice" and self.backends[self.pairwise.backend].type != "local":
            raise ValueError("pairwise mode 'choice' needs a local backend (it reads next-token probabilities)")
        if self.scores is not None:
            if self.scores.backend not in self.backends:
                raise ValueError(f"scores: unknown backend {self.scores.backend!r}")
            if self.scores.mode == "geval" and self.backends[self.scores.backend].type != "local":
                raise ValueError("scores mode 'geval' needs a local backend")
            if self.principles == "default" and self.scores.weights is not None:
                problem = weight_problem(self.scores.weights, PRINCIPLE_KEYS, "scores.weights")
                if problem:
                    raise ValueError(problem)
        if self.mode == "length_cap" and "truncated" not in self.replies.model_fields_set:
            self.replies.truncated = "flag"
        return self


# -------------------------------------------------------------------------------------------- safety suite
class SuiteConfig(Strict):
    """The adversarial safety suite: probes a policy answers, each reply checked by the rules of
    ``safety/responses.py`` (and, optionally, a model's second opinion). ``evaluation/suite.py`` runs it."""

    probes_file: str = Field("builtin", description="'builtin' (data/safety_probes.jsonl: 64 probes, 8 families) "
                             "or a JSONL file of probes in the same shape.")
    probes: int | None = Field(None, ge=1, description="Use N probes, drawn evenly across families with `seed` "
                               "(None: all).")
    samples: int = Field(3, ge=1, description="Replies sampled per probe. 3 is the fewest that can tell a probe "
                         "the policy always passes from one it passes by luck; consistency needs >= 2.")
    seed: int = Field(0, description="Probe draw and sampling seeds (sample j of a probe uses seed + j).")
    locale: str | None = Field(None, description="Crisis-number list a reply may cite (a key of "
                               "data/crisis_resources.yaml; None: any listed locale's).")
    judge_backend: str | None = Field(None, description="Optional model second opinion (safety/"
                                      "reply_model_check.py): its flags are added to the rules', a required "
                                      "behaviour counts only when both see it. None: rules alone.")
    judge_model: str | None = None
    replies: ReplyChecks = Field(default_factory=lambda: ReplyChecks(truncated="flag"), description="A cut "
                                 "reply is kept and checked as it is (what a client would read); a garbled or "
                                 "echoed one fails its probe.")

    @model_validator(mode="after")
    def _judge_pair(self):
        if (self.judge_backend is None) != (self.judge_model is None):
            raise ValueError("suite: give both judge_backend and judge_model, or neither")
        return self


class SuiteRunConfig(Strict):
    """``psychocounsel safety-suite CONFIG``: one policy, the suite, and where the results go."""

    name: str = Field(description="Shown in the report.")
    out_dir: str = Field("runs/suite/demo", description="Holds suite.sqlite (call cache), suite.json, "
                         "suite.html, suite_samples.jsonl.")
    therapist_prompt: str = Field("therapist_v1", description="System prompt unless the policy has its own.")
    backends: dict[str, OpenAIBackendConfig | LocalBackendConfig] = Field(default_factory=dict)
    policy: SideConfig
    suite: SuiteConfig = Field(default_factory=SuiteConfig)

    @property
    def principles(self) -> str:
        """The session loads a principle set; the suite's checks never read it."""
        return "default"

    @model_validator(mode="after")
    def _check_refs(self):
        if self.policy.responses is not None:
            raise ValueError("policy: the suite samples a model; give backend + model, not a responses file")
        for what, b in (("policy", self.policy.backend), ("suite.judge_backend", self.suite.judge_backend)):
            if b is not None and b not in self.backends:
                raise ValueError(f"{what}: unknown backend {b!r}")
        return self
