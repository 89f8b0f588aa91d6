"""Typed configs of the session judges (``judge-sessions``) and the session comparison (``compare-sessions``).

The lowest fact of the judging half of ``sessions/``: the judges, the comparison, the report and the commands
all read these. A judge config names a simulation's run folder (what ``simulate`` wrote, ``transcripts.jsonl``)
and which judges to run on it; the judgments go into a folder of their own (``out_dir``), so judging a run
twice with two judges keeps both, and nothing the simulator wrote is touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..config import (
    LocalBackendConfig,
    OpenAIBackendConfig,
    SamplingConfig,
    Strict,
    load_yaml_config,
)


FILE_SUFFIXES = (".yaml", ".yml", ".txt", ".jsonl")  # a prompt, rubric, checklist, principles or profiles file


def _judge_sampling() -> SamplingConfig:
    # greedy: the same transcript should get the same verdict; 900 tokens leave room for a rationale and every
    # checklist item (16 items x ~8 tokens + rationale ~120) with a wide margin
    return SamplingConfig(temperature=0.0, max_tokens=900)


class SessionJudge(Strict):
    """One session judge: which model answers, with what prompt, and how often a bad reply is asked again."""

    backend: str = Field(description="Name of an entry under `backends:`.")
    model: str
    prompt: str | None = Field(None, description="A prompt file (None: the built-in one of this judge).")
    max_attempts: int = Field(3, ge=1, description="Calls per item before an unreadable reply is a recorded failure.")
    sampling: SamplingConfig = Field(default_factory=_judge_sampling)


class RubricJudge(SessionJudge):
    file: str = Field("default", description="Session rubric YAML ('default': data/sessions/judges/rubric.yaml).")


class SafetyFlowJudge(SessionJudge):
    file: str = Field("default", description="Checklist YAML ('default': data/sessions/judges/safety_flow.yaml).")


class BootstrapSettings(Strict):
    n_boot: int = Field(2000, ge=1, description="2,000 resamples: each 2.5% endpoint rests on 50 of them.")
    seed: int = 0


class JudgeSessionsConfig(Strict):
    """``psychocounsel judge-sessions CONFIG``: judge every finished session of a simulation run."""

    name: str = Field("session-judges", description="Names this judging in reports.")
    run_dir: str = Field(description="The simulation's run folder (holds transcripts.jsonl).")
    out_dir: str | None = Field(None, description="Where judgments and the report go (None: <run_dir>/judged/<name>).")
    profiles: str | None = Field(
        None, description="Profiles file (YAML or JSONL) for breakdowns by severity, style and risk "
        "(None: the built-in profiles and benchmark; sessions of unknown profiles are left out of breakdowns).")
    principles: str = Field("default", description="Principles for the per-turn judge ('default' or a YAML file).")
    backends: dict[str, OpenAIBackendConfig | LocalBackendConfig]
    turns: SessionJudge | None = Field(None, description="Per-turn principle judge (None: skipped).")
    rubric: RubricJudge | None = Field(None, description="Whole-session rubric judge (None: skipped).")
    safety_flow: SafetyFlowJudge | None = Field(None, description="Safety-flow checklist judge (None: skipped).")
    locale: str | None = Field("US", description="Crisis numbers a reply may cite (a data/crisis_resources.yaml key: US, GB, IE, CA, AU, NZ; None: any listed number).")
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)

    @model_validator(mode="after")
    def _check(self):
        for field in ("turns", "rubric", "safety_flow"):
            j = getattr(self, field)
            if j is not None and j.backend not in self.backends:
                raise ValueError(f"{field}.backend: unknown backend {j.backend!r} (backends: {', '.join(self.backends)})")
        return self

    def out_path(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path(self.run_dir) / "judged" / self.name

    def seen_from(self, base_dir: Path, folder: Path) -> JudgeSessionsConfig:
        """This config with its relative paths (given against ``base_dir``) re-expressed against ``folder``, and
        ``out_dir`` the folder itself: the judging folder's resolved config then reopens from any working
        directory (``session-report``, ``session-leaderboard``), and with its simulation run if both move."""

        def rebase(spec: str | None, path: bool = False) -> str | None:
            if spec is None or Path(spec).is_absolute():
                return spec
            p = base_dir / spec
            # a built-in name ('default', 'shipped') stays a name; a file is told apart as Session.path does
            is_file = ("/" in spec or spec.endswith(FILE_SUFFIXES)) and p.exists()
            return os.path.relpath(os.path.abspath(p), os.path.abspath(folder)) if path or is_file else spec

        judges = {f: j.model_copy(update={"prompt": rebase(j.prompt)} | ({"file": rebase(j.file)} if f != "turns"
                                                                           else {}))
                  for f in ("turns", "rubric", "safety_flow") if (j := getattr(self, f)) is not None}
        return self.model_copy(update={"run_dir": rebase(self.run_dir, path=True), "out_dir": ".",
                                       "profiles": rebase(self.profiles), "principles": rebase(self.principles),
                                       **judges})


class CompareSessionsConfig(Strict):
    """``psychocounsel compare-sessions CONFIG``: sessions of run A against run B with the same client."""

    name: str = Field("session-compare", description="Names this comparison in reports.")
    run_a: str = Field(description="Simulation run folder of policy A.")
    run_b: str = Field(description="Simulation run folder of policy B.")
    out_dir: str = Field(description="Where verdicts and compare.json go.")
    principles: str = Field("default", description="Unused by the comparison; kept so the run folder opens alike.")
    backends: dict[str, OpenAIBackendConfig | LocalBackendConfig]
    judge: SessionJudge
    rubric_file: str = Field("default", description="Session rubric whose criteria the judge weighs.")
    match: Literal["profile_seed_budget", "profile"] = Field(
        "profile_seed_budget", description="Which sessions face each other: the same profile, seed and budget "
        "(a paired design), or the same profile (the first session of each).")
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)

    @model_validator(mode="after")
    def _check(self):
        if self.judge.backend not in self.backends:
            raise ValueError(f"judge.backend: unknown backend {self.judge.backend!r}")
        return self


def load_judge_config(path: str | Path, overrides: list[str] | None = None) -> JudgeSessionsConfig:
    return load_yaml_config(JudgeSessionsConfig, path, overrides or ())


def load_compare_config(path: str | Path, overrides: list[str] | None = None) -> CompareSessionsConfig:
    return load_yaml_config(CompareSessionsConfig, path, overrides or ())
