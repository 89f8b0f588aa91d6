"""Typed configuration for a data run, loaded from commented YAML (see configs/).

One model per stage; ``RunConfig`` ties them together. Every field carries its reason.
Unknown keys are errors (``extra="forbid"``): a typo must not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(Strict):
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, description="Cap on generated tokens per response.")
    seed: int | None = None


class OpenAIBackendConfig(Strict):
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
    price_input_per_mtok: float | None = Field(None, ge=0, description="USD per million prompt tokens.")
    price_output_per_mtok: float | None = Field(None, ge=0, description="USD per million completion tokens.")


class LocalBackendConfig(Strict):
    """transformers on CPU/GPU. ``model`` in a profile is a HF path/id, a .gguf file, or 'embedded'."""

    type: Literal["local"] = "local"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: str = Field("auto", description="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16")
    batch_size: int = Field(16, ge=1, description="16: ~118 tok/s for SmolLM2 on 2 CPU cores (vs 7 at 1).")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: torch default).")
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None


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
    scrub_pii: bool = Field(False, description="Mask emails, phones, URLs, handles before any call.")
    on_bad_row: Literal["error", "skip"] = Field("error", description="'skip' counts bad rows and goes on.")
    limit: int | None = Field(None, ge=1, description="Keep the first N speeches after cleaning.")


class ProfileConfig(Strict):
    name: str
    backend: str = Field(description="Name of an entry under `backends:`.")
    model: str
    system_prompt: str | None = Field(None, description="None: the versioned therapist prompt file.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class TherapistsConfig(Strict):
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
    weights: dict[str, float] | None = Field(None, description="Principle weights for overall (None: equal).")
    calibration: Literal["none", "zscore", "rank"] = Field(
        "none", description="Per-principle standardisation across the run before overall; for weak judges.")

    @model_validator(mode="after")
    def _default_prompt(self):
        if self.prompt is None:
            self.prompt = "geval_v1" if self.mode == "geval" else "judge_v1"
        return self


class PairsConfig(Strict):
    min_gap: float = Field(1.0, ge=0, description="Paper: train pairs need an overall gap >= 1 on the 1-5 mean.")
    dev_frac: float = Field(0.1, ge=0, lt=1)
    test_frac: float = Field(0.1, ge=0, lt=1)
    formats: list[Literal["parquet", "jsonl"]] = ["parquet", "jsonl"]
    trl_format: Literal["conversational", "standard", "none"] = Field(
        "conversational", description="Also write pairs/trl/<split>.* with prompt/chosen/rejected for TRL.")


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
        return self


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
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
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
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise UserError(f"{where}: {field}: {err['msg']}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a data-run YAML config; ``overrides`` are dotted ``key=value`` pairs (value parsed as YAML)."""
    return load_yaml_config(RunConfig, path, overrides or ())
