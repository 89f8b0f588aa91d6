"""``train-online-dpo``'s config: every field a run reads, with its source, and which of them a resumed run may
change."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ...config import load_yaml_config


class SafetySuiteGate(BaseModel):
    """The adversarial safety suite (``evaluation/suite.py``) run on the initial policy and after every round; a
    round whose pass rate falls below the best-so-far's by more than ``margin`` is never selected as best."""

    model_config = ConfigDict(extra="forbid")

    probes: int = Field(16, ge=1, description="Probes per run, drawn evenly over the 8 families (16: two each).")
    samples: int = Field(2, ge=1, description="Replies per probe, sampled as the round samples.")
    margin: float = Field(0.05, ge=0, le=1, description=(
        "Pass-rate drop (0-1) tolerated before a round is refused as best. 0.05: on 16 x 2 replies one more "
        "failed reply is 0.03, so a single unlucky sample does not veto a round."))
    seed: int = Field(0, description="Probe draw and sampling seeds (the same probes every round).")


class OnlineDPOConfig(BaseModel):
    """Everything that shapes an online DPO run. Defaults are the paper's where it gives a number."""

    model_config = ConfigDict(extra="forbid")

    out: str | None = Field(None, description="Output folder (the command's --out).")
    model: str = Field("embedded", description="Initial policy: checkpoint folder, .gguf file, 'embedded' or hub id.")
    reward_model: str | None = Field(None, description=(
        "Reward model folder (train-rm / multi-head output) scoring sampled responses."))
    reward_weights: dict[str, float] | None = Field(None, description=(
        "Principle weights for a per-principle reward model (e.g. safety: 2); null = its own overall."))
    combine: Literal["auto", "weighted", "safety_constraint"] = Field("auto", description=(
        "How each speech's best and worst sample are chosen. safety_constraint: a sample whose safety head is "
        "below safety_threshold loses to every sample above it, whatever its weighted overall, so an unsafe "
        "reply is never the chosen side of a pair (training.multihead.combine); weighted: by the overall "
        "alone; auto: safety_constraint when the reward model has a safety head (a per-principle "
        "checkpoint), else weighted. Rewards in the logs are always the weighted overall."))
    safety_threshold: float | None = Field(None, description=(
        "Threshold on the safety head's scale; null = the one the per-principle checkpoint stored at training."))
    flag_veto: list[str] = Field(default_factory=lambda: ["wrong_number", "method_info", "medical_advice"],
                                 description=(
        "Reply-check flag kinds (safety.responses) a chosen sample may not carry: such a pair is dropped and counted. "
        "Default: the high-severity kinds, the ones that can hurt a client at risk today; []: off."))
    pairs: list[str] = Field(default_factory=list, description=(
        "Pair files or folders whose unique `question`s are the speeches (train and dev splits)."))
    speeches: str | None = Field(None, description=(
        "Alternative train speeches: a .jsonl/.csv/.parquet file with a `speech_column`; used instead of pairs."))
    dev_speeches_file: str | None = Field(None, description="Dev speeches file (same format); default: pairs' dev split.")
    speech_column: str = Field("text", description="Column holding the speech in speeches files.")
    train_split: str = Field("train", description="Split of the pair files the rounds draw speeches from.")
    dev_split: str = Field("dev", description="Split of the pair files used for dev evaluation.")
    rounds: int = Field(16, ge=1, description="Rounds (paper: 1,600 steps at 100 steps per round = 16).")
    speeches_per_round: int = Field(6400, ge=1, description="Speeches drawn per round (paper: 6,400).")
    samples_per_speech: int = Field(8, ge=2, description="Responses sampled per speech (paper: 8).")
    min_gap: float = Field(0.0, ge=0, description=(
        "Skip a speech whose best-worst reward gap is below this (a zero gap is always skipped: no preference)."))
    temperature: float = Field(0.7, gt=0, le=2, description="Sampling temperature (0.7: common vLLM default).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(512, ge=1, description="Cap on tokens per sampled response.")
    dev_speeches: int = Field(200, ge=0, description="Dev speeches scored after each round (0: no dev eval).")
    dev_max_tokens: int | None = Field(None, ge=1, description="Cap for greedy dev replies; null = max_tokens.")
    backend: Literal["local", "openai"] = Field("local", description=(
        "Where sampling runs (see training.online_dpo's docstring)."))
    base_url: str = Field("http://localhost:8000/v1", description="OpenAI-compatible server (backend: openai).")
    served_model: str = Field("policy", description="Model name the server serves the current policy under.")
    api_key_env: str | None = Field(None, description="Env var with the server's API key (vLLM: none needed).")
    concurrency: int = Field(256, ge=1, description="Requests in flight (openai backend).")
    reload_command: str | None = Field(None, description=(
        "Run after each round to make the server serve {checkpoint}; null + openai = pause and ask."))
    generation_batch_size: int = Field(16, ge=1, description="Local backend micro-batch (16: ~118 tok/s SmolLM2 CPU).")
    device: str = Field("auto", description="auto | cpu | cuda for local generation and reward scoring.")
    beta: float = Field(0.1, gt=0, description="DPO beta (paper: 0.1).")
    reference: Literal["previous", "initial"] = Field("previous", description=(
        "DPO reference: the policy at the start of each round (iterative DPO, the paper) or the initial policy."))
    learning_rate: float = Field(5e-7, gt=0, description="Learning rate (paper: 5e-7).")
    epochs_per_round: float = Field(1.0, gt=0, description=(
        "Passes over each round's pairs (paper: 1); more steps per round when rounds are small."))
    sft_weight: float = Field(0.0, ge=0, description=(
        "Add this x the NLL of the chosen (best) sample to the DPO loss (iterative RPO, Pang et al. 2024); 0 = "
        "plain DPO (the paper)."))
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("constant", description=(
        "Schedule within a round; constant keeps every round's step size equal."))
    batch_size: int = Field(64, ge=1, description="Pairs per optimizer step (paper: 64).")
    per_device_batch_size: int = Field(8, ge=1, description="Pairs per forward; accumulation makes up batch_size.")
    max_length: int = Field(2048, ge=8, description="Tokens of prompt + response per DPO example.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 on a GPU, fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Less memory, ~20% slower.")
    train_layers: int | None = Field(None, ge=1, description=(
        "Update only the top N transformer blocks (embeddings frozen): ~4x faster on CPU; null = every weight."))
    keep_all_rounds: bool = Field(False, description="Keep every round's checkpoint (default: best and latest).")
    seed: int = Field(0, description="Seeds speech draws, sampling streams and training.")
    safety_suite: SafetySuiteGate | None = Field(None, description=(
        "Run the safety suite each round and refuse as best a round whose pass rate drops by more than its "
        "margin; null = off."))


# Fields a resumed run may change: they do not change what earlier rounds trained.
RESUME_FREE = {"rounds", "keep_all_rounds", "reload_command", "base_url", "concurrency", "api_key_env",
                "generation_batch_size", "out"}


def load_online_dpo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> OnlineDPOConfig:
    """YAML (or the defaults) plus dotted ``key=value`` overrides (values parsed as YAML)."""
    return load_yaml_config(OnlineDPOConfig, path, overrides)
