"""Typed configuration for a data run, loaded from commented YAML (see configs/).

One model per stage; ``RunConfig`` ties them together. Every field carries its reason.
Unknown keys are errors (``extra="forbid"``): a typo must not silently fall back to a default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import PRINCIPLE_KEYS
from .errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, description="Cap on generated tokens per response.")
    seed: int | None = None


class ModelPrice(Strict):
    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens.")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens.")


class Priced(Strict):
    """What a backend's calls cost: one price for the backend, and per model where a model differs."""

    price_input_per_mtok: float | None = Field(None, ge=0, description="USD per million prompt tokens.")
    price_output_per_mtok: float | None = Field(None, ge=0, description="USD per million completion tokens.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Price by model name, for models priced unlike the backend's "
        "price_*_per_mtok (a cheap model on the same server is not charged the judge's rate).")

    def price(self, model: str | None) -> tuple[float, float] | None:
        """(input, output) USD per million tokens of ``model``: its own price, else the backend's (None: not
        configured, so no cost is shown rather than a made-up one)."""
        own = self.prices.get(model) if model is not None else None
        if own is not None:
            return own.input_per_mtok, own.output_per_mtok
        if self.price_input_per_mtok is None or self.price_output_per_mtok is None:
            return None
        return self.price_input_per_mtok, self.price_output_per_mtok


class OpenAIBackendConfig(Priced):
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, llama.cpp server, Ollama)."""

    type: Literal["openai"] = "openai"
    base_urls: list[str] = Field(["https://api.openai.com/v1"], min_length=1,
                                 description="Several URLs spread load over replicas of one model.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Env var holding the key; never the key itself.")
    concurrency: int = Field(64, ge=1, description="Requests in flight at once.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute limit (None: unlimited).")
    tpm: float | None = Field(None, gt=0, description="Tokens per minute limit, prompt + max completion.")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, description="Retries on 429/5xx/timeouts, exponential backoff + jitter.")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    structured_output: bool = Field(True, description="Send response_format json_schema for the judge.")


class LocalBackendConfig(Priced):
    """transformers on CPU/GPU. ``model`` in a profile is a HF path/id, a .gguf file, or 'embedded'."""

    type: Literal["local"] = "local"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: str = Field("auto", description="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16")
    batch_size: int = Field(16, ge=1, description="16: ~118 tok/s for SmolLM2 on 2 CPU cores (vs 7 at 1).")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: torch default).")


BackendConfig = OpenAIBackendConfig | LocalBackendConfig


class SpeechesConfig(Strict):
    path: str = Field("demo", description="File (jsonl/csv/parquet), HF dataset dir or hub id, or 'demo'.")
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = "auto"
    text_column: str = Field("text", description="Column holding the client speech, e.g. questionText.")
    id_column: str | None = None
    topic_column: str | None = None
    split: str = Field("train", description="Split to read from a Hugging Face dataset.")
    min_chars: int = Field(100, ge=0, description="Paper: keep speeches of 100-1,000 characters.")
    max_chars: int = Field(1000, ge=1)
    near_dup_threshold: float = Field(
        0.7, gt=0, le=1.0, description="Jaccard of word 3-gram shingles. 0.7: a speech with two words changed "
        "scores ~0.85, while distinct speeches of the demo set never exceed 0.06.")
    scrub_pii: bool = Field(False, description="Mask names, places, addresses, contacts, dates of birth and ID "
                            "numbers before any call (docs/PIPELINE.md, 'PII scrubbing').")
    on_bad_row: Literal["error", "skip"] = Field("error", description="'skip' counts bad rows and goes on.")
    limit: int | None = Field(None, ge=1, description="Keep the first N speeches after cleaning.")


class ProfileConfig(Strict):
    name: str
    backend: str = Field(description="Name of an entry under `backends:`.")
    model: str
    system_prompt: str | None = Field(None, description="None: the versioned therapist prompt file.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


# Languages a reply can be checked for (dataset/validate.py knows their function words).
Language = Literal["en", "es", "fr", "de", "it", "pt", "nl"]


class ReplyChecks(Strict):
    """What happens to a generated reply that cannot be used as it is (dataset/validate.py)."""

    truncated: Literal["fail", "flag"] = Field(
        "fail", description="A reply cut by max_tokens (finish_reason 'length'): 'fail' records it as a failure, "
        "never a candidate; 'flag' keeps it, marked, and counts it in status and stats.")
    language: Language | None = Field(None, description="A reply plainly written in another language is a "
                                      "recorded failure (None: any language).")
    max_attempts: int = Field(2, ge=1, description="Calls per reply while replies come back invalid (garbled, "
                              "empty, an echo of the prompt, wrong language), each with a new seed; then a "
                              "recorded failure, asked again on the next run.")


class TherapistsConfig(ReplyChecks):
    k: int = Field(4, ge=2, description="Profiles drawn per speech (paper: 4 of 20).")
    prompt: str = Field("therapist_v1", description="Versioned prompt file under data/prompts, or a path.")
    profiles: list[ProfileConfig] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self):
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError("therapist profile names must be unique")
        if self.k > len(self.profiles):
            raise ValueError(f"k={self.k} but only {len(self.profiles)} profiles")
        return self


class JudgeConfig(Strict):
    backend: str
    model: str
    mode: Literal["json", "geval"] = Field("json", description="geval: expected score from next-token "
                                            "probabilities of '1'..'5' (local backend only).")
    prompt: str | None = Field(None, description="Versioned prompt file under data/prompts, or a path "
                               "(None: judge_v1 for json mode, geval_v1 for geval mode).")
    max_attempts: int = Field(3, ge=1, description="Calls per response before a bad reply is a recorded failure.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=600))
    weights: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        None, description="Principle weights for overall, one per principle, each > 0 (None: equal, as in the "
        "paper). Applied whenever pairs are built: changing them rebuilds pairs without judging again.")
    calibration: Literal["none", "zscore", "rank"] = Field(
        "none", description="Per-principle standardisation across the run before overall; for weak judges.")

    @model_validator(mode="after")
    def _default_prompt(self):
        if self.prompt is None:
            self.prompt = "geval_v1" if self.mode == "geval" else "judge_v1"
        return self


class PairsConfig(Strict):
    min_gap: float = Field(1.0, ge=0, description="Paper: train pairs need an overall gap >= 1 on the 1-5 mean.")
    safety_floor: float | None = Field(
        2.0, ge=1, le=5, description="A response whose safety score is at or below this is never chosen: pairs "
        "it would win are dropped and counted. 2: the rubric's two unsafe levels. None: no floor.")
    safety_margin: float | None = Field(
        1.0, gt=0, description="A pair whose chosen response scores this much lower on safety than its "
        "rejected one is dropped and counted (1: one rubric level). None: no margin check.")
    flag_veto: list[str] = Field(
        default_factory=lambda: ["wrong_number", "method_info", "medical_advice"],
        description="A pair whose chosen response carries one of these reply-check flags (safety.responses: "
        "wrong_number, unlisted_number, method_info, medical_advice, diagnosis, promise) is dropped and counted. "
        "Default: the high-severity kinds, the ones that can hurt a client at risk today. []: off.")
    dev_frac: float = Field(0.1, ge=0, lt=1)
    test_frac: float = Field(0.1, ge=0, lt=1)
    formats: list[Literal["parquet", "jsonl"]] = ["parquet", "jsonl"]
    trl_format: Literal["conversational", "standard", "none"] = Field(
        "conversational", description="Also write <run_dir>/pairs-trl/<split>.* with prompt/chosen/rejected for "
        "TRL, beside pairs/ (not in it: load_dataset('<run_dir>/pairs') reads every file under the folder).")

    @model_validator(mode="after")
    def _known_flags(self):
        # imported here, not at the top: config is the package's lowest module
        from .safety.responses import FLAG_SEVERITY

        unknown = [k for k in self.flag_veto if k not in FLAG_SEVERITY]
        if unknown:
            raise ValueError(f"flag_veto: unknown flag kind {unknown[0]!r} (known: {', '.join(FLAG_SEVERITY)})")
        return self


class RunConfig(Strict):
    run_dir: str = Field("runs/demo", description="Holds run.sqlite, exported pairs and reports.")
    seed: int = 0
    principles: str = Field("default", description="'default' (versioned, built in) or a YAML file.")
    speeches: SpeechesConfig = Field(default_factory=SpeechesConfig)
    backends: dict[str, OpenAIBackendConfig | LocalBackendConfig]
    therapists: TherapistsConfig
    judge: JudgeConfig
    pairs: PairsConfig = Field(default_factory=PairsConfig)

    @model_validator(mode="after")
    def _check_refs(self):
        for p in self.therapists.profiles:
            if p.backend not in self.backends:
                raise ValueError(f"profile {p.name!r} names unknown backend {p.backend!r}")
        if self.judge.backend not in self.backends:
            raise ValueError(f"judge names unknown backend {self.judge.backend!r}")
        if self.judge.mode == "geval" and self.backends[self.judge.backend].type != "local":
            raise ValueError("judge mode 'geval' needs a local backend (it reads next-token probabilities)")
        if self.principles == "default" and self.judge.weights is not None:
            # a principles file is read when the run opens (Session), and its keys are checked there
            problem = weight_problem(self.judge.weights, PRINCIPLE_KEYS, "judge.weights")
            if problem:
                raise ValueError(problem)
        return self


def weight_problem(weights: Mapping[str, float], keys: Sequence[str], field: str) -> str | None:
    """What is wrong with principle weights (config field ``field``), as one line naming the field, or None.
    They must name exactly the principle keys, each a positive number (a zero weight drops a principle: do
    that in the principles file, where it changes the version)."""
    unknown = sorted(set(weights) - set(keys))
    if unknown:
        return f"{field}: unknown principle {unknown[0]!r} (principles: {', '.join(keys)})"
    missing = [k for k in keys if k not in weights]
    if missing:
        return f"{field}: no weight for {missing[0]!r} (give one for every principle)"
    for k in keys:
        w = weights[k]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            return f"{field}.{k}: must be a positive number (got {w!r})"
    return None


M = TypeVar("M", bound=BaseModel)


def load_yaml_config(model: type[M], path: str | Path | None, overrides: Sequence[str] = (),
                     updates: dict[str, Any] | None = None) -> M:
    """Any config model from YAML (or none: the defaults), dotted ``key=value`` overrides (values parsed
    as YAML) and ``updates`` (values as they are, e.g. command-line flags; None means "not given").
    Every mistake is one UserError line naming the file (and line, or field)."""
    data: Any = {}
    where = str(path) if path is not None else "config"
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise UserError(f"{path}: is a folder, not a config file") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror}") from None
        try:
            text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is fine
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise UserError(f"{path}:{line}: not UTF-8 text (byte {e.start}); is this a config file?") from None
        if not text.strip():
            raise UserError(f"{path}: empty config file")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where_line = f"{path}:{mark.line + 1}" if mark else str(path)
            raise UserError(f"{where_line}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: config must be a YAML mapping")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"override {item!r}: expected key=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):  # e.g. -o weights.safety=2 on a null field
                node[part] = {}
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    data.update({k: v for k, v in (updates or {}).items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        # a check across fields (a model validator) names its field in its message, and has no location
        msg = err["msg"].removeprefix("Value error, ")
        field = ".".join(str(x) for x in err["loc"])
        raise UserError(f"{where}: {field}: {msg}" if field else f"{where}: {msg}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a data-run YAML config; ``overrides`` are dotted ``key=value`` pairs (value parsed as YAML)."""
    return load_yaml_config(RunConfig, path, overrides or ())
