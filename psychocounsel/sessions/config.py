"""Typed configuration of ``psychocounsel simulate``: which profiles talk with which therapist policies, for how
many therapist turns, played by which models. Loaded from commented YAML (configs/sessions/).

The lowest module of the simulator: ``profiles``, ``simulator``, ``simulate`` and ``command`` import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import (
    LocalBackendConfig,
    OpenAIBackendConfig,
    SamplingConfig,
    Strict,
    load_yaml_config,
)

# The kinds of scripted event a profile or a run can put at a client turn (profiles.py documents each).
InjectionKind = Literal["escalation", "method_question", "no_hotlines", "false_alarm"]
INJECTION_KINDS: tuple[str, ...] = ("escalation", "method_question", "no_hotlines", "false_alarm")


class InjectionConfig(Strict):
    """A scripted client event at one client turn (0: the opening message)."""

    turn: int = Field(ge=0, description="Client turn (0-based; 0 is the opening message) the event happens at.")
    kind: InjectionKind = Field(description="escalation | method_question | no_hotlines | false_alarm.")
    text: str | None = Field(None, min_length=1, description="The client's message, word for word (no model "
                             "call). None: the simulator is told to write the event in character.")


class SimulatorConfig(Strict):
    """The model that plays the client."""

    backend: str = Field(description="Name of an entry under `backends:`.")
    model: str = Field(description="Model name on that backend ('embedded' for the local SmolLM2).")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.8, max_tokens=160),
        description="0.8: a client varies between sessions more than a therapist should; 160 tokens (~120 "
        "words) is the longest message a verbose client writes in a chat.")


class PolicyConfig(Strict):
    """One therapist policy under test: it sees its system prompt, the intake summary and the conversation."""

    name: str = Field(min_length=1, description="Names the policy in transcripts and reports.")
    backend: str = Field(description="Name of an entry under `backends:`.")
    model: str = Field(description="Model name on that backend ('embedded' for the local SmolLM2).")
    system_prompt: str | None = Field(None, description="None: the built-in session therapist prompt "
                                      "(simulator.THERAPIST_PROMPT). The intake summary is appended either way.")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=256),
        description="0.7 and 256 tokens: the data pipeline's therapist defaults (config.SamplingConfig).")


class SimulateConfig(Strict):
    run_dir: str = Field("runs/sessions/demo", description="Holds sessions.sqlite (turns and the call cache) "
                         "and transcripts.jsonl.")
    seed: int = Field(0, description="Sampling seed of every call whose sampling.seed is unset; part of the "
                      "session id, so another seed is another set of sessions.")
    principles: str = Field("default", description="The principles the session judges score by ('default' or "
                            "a YAML file); recorded with the run.")
    profiles: str = Field("shipped", description="'shipped' (data/sessions/profiles.yaml), 'benchmark' (the "
                          "frozen split, data/sessions/benchmark.jsonl), or a .yaml/.jsonl file of profiles.")
    profile_ids: list[str] | None = Field(None, description="Only these profiles, in this order (None: all).")
    limit: int | None = Field(None, ge=1, description="The first N profiles after profile_ids.")
    backends: dict[str, OpenAIBackendConfig | LocalBackendConfig] = Field(
        description="Named backends the simulator and the policies name (as in a data run's config).")
    simulator: SimulatorConfig = Field(description="The model that plays the client.")
    policies: list[PolicyConfig] = Field(min_length=1, description="The therapist policies under test; each "
                                         "talks with every profile at every budget.")
    budgets: list[int] = Field([10], min_length=1, description="Therapist turns per session; every profile x "
                               "policy x budget is one session (10/20/40: a first session, a long one, a course).")
    injections: list[InjectionConfig] = Field(default_factory=list, description="Events added to every "
                                              "profile's own injections (a profile's own event wins a turn).")
    truncated: Literal["fail", "flag"] = Field(
        "flag", description="A message cut by max_tokens: 'flag' keeps it (its turn records finish_reason "
        "'length'); 'fail' fails the session.")
    echo: Literal["fail", "flag"] = Field(
        "fail", description="A message that copies the last message or its prompt (dataset/validate.py): 'fail' "
        "asks again (max_attempts), then fails the session; 'flag' keeps it, its turn's flags say 'echo' (tiny "
        "models parrot; the judges then see it).")
    max_attempts: int = Field(2, ge=1, description="Calls per message while replies come back invalid (empty, "
                              "garbled, an echo of the last message), each with a new seed; then the session "
                              "is recorded failed, and asked again on the next run.")
    concurrency: int | None = Field(None, ge=1, description="Sessions in flight at once (None: what the "
                                    "backends take: each session has one call in flight at a time).")

    # what dataset.validate.check_reply reads of a config
    @property
    def language(self) -> None:
        return None

    @model_validator(mode="after")
    def _check(self):
        names = [p.name for p in self.policies]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"policies: name {dup!r} given twice")
        for where, backend in [("simulator", self.simulator.backend),
                               *((f"policies.{p.name}", p.backend) for p in self.policies)]:
            if backend not in self.backends:
                raise ValueError(f"{where}: unknown backend {backend!r} (backends: {', '.join(self.backends)})")
        if any(b < 1 for b in self.budgets):
            raise ValueError("budgets: each budget is a number of therapist turns, at least 1")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError("budgets: a budget is given twice")
        turns = [i.turn for i in self.injections]
        if len(set(turns)) != len(turns):
            raise ValueError("injections: two events at one turn")
        return self


def load_simulate_config(path: str, overrides: list[str] | tuple[str, ...] = ()) -> SimulateConfig:
    """A simulate config from YAML with dotted ``key=value`` overrides; mistakes are one UserError line."""
    return load_yaml_config(SimulateConfig, path, overrides)
