"""The drafting assistant's deployment file: which backend drafts, which reward model ranks, and the policy.

Loaded from commented YAML (configs/serve.yaml) with ``extra="forbid"``: a misspelt policy key must not fall
back to a default, because the defaults decide what is kept about clients.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from ..config import LocalBackendConfig, OpenAIBackendConfig, SamplingConfig, Strict, load_yaml_config

OUTPUTS = ("scores", "principles", "reasons", "flags")


class PolicyConfig(Strict):
    """What this deployment keeps, shows and exports. One file per deployment, agreed with its data owner."""

    storage: bool = Field(False, description="Keep client messages, drafts and edits in the database. Off: they "
                          "live in server memory only, for the page they were drafted on (and expire).")
    retention_days: int = Field(30, ge=1, description="With storage on, client text older than this is erased "
                                "(the rows' counts and ids stay). 30: a month of review, then gone.")
    memory_minutes: int = Field(120, ge=1, description="With storage off, how long a draft page stays in memory "
                                "(120: a clinical session plus its notes).")
    show: list[Literal["scores", "principles", "reasons", "flags"]] = Field(
        list(OUTPUTS), description="What a clinician sees per draft: the reward model's overall score, its "
        "per-principle scores, the one-line reason, the reply checks' flags.")
    export_pairs: bool = Field(False, description="Allow the admin to export approved edits as preference pairs "
                               "(edited > original draft). Needs storage.")
    export_labels: bool = Field(False, description="Allow the admin to export unpaired accept/reject labels. "
                                "Needs storage.")
    scrub_pii: Literal["remote", "always", "never"] = Field(
        "remote", description="Mask names, places, contacts (dataset/pii) before a model call: 'remote' for "
        "any backend not on this machine (loopback), 'always', or 'never'.")

    @model_validator(mode="after")
    def _export_needs_storage(self) -> PolicyConfig:
        if (self.export_pairs or self.export_labels) and not self.storage:
            raise ValueError("policy.export_pairs / export_labels need policy.storage: true (nothing is kept "
                             "to export otherwise)")
        return self


class ServeConfig(Strict):
    """``psychocounsel serve CONFIG``: one deployment of the drafting assistant."""

    backend: Annotated[OpenAIBackendConfig | LocalBackendConfig, Field(discriminator="type")] = Field(
        default_factory=LocalBackendConfig, description="Who writes the drafts: local transformers (the embedded "
        "SmolLM2 by default) or any OpenAI-compatible server.")
    model: str = Field("embedded", description="The policy model's name on that backend ('embedded', a .gguf, "
                       "a folder, a hub id, or the server's model name).")
    prompt: str = Field("therapist_v1", description="System prompt: a built-in prompt name or a text file.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.8, max_tokens=256),
                                     description="0.8: drafts must differ from each other to be worth ranking.")
    reward_model: str | None = Field(None, description="A reward-model checkpoint (train-rm or "
                                     "train-rm-multihead); none: drafts are shown unranked, and the page says so.")
    reward_device: str = Field("auto", description="Device for the reward model: auto | cpu | cuda.")
    locale: str = Field("US", description="Crisis resources shown and checked: a key of data/crisis_resources.yaml.")
    learned_screen: bool = Field(True, description="The crisis screen's learned layer after its rules (raises tiers "
                                 "only; catches far more risk, with more false alarms: docs/CRISIS_SCREEN.md). "
                                 "false: the rules alone.")
    n_default: int = Field(3, ge=1, description="Drafts per message unless the clinician picks another N.")
    n_max: int = Field(8, ge=1, description="Most drafts one request may ask for (8: each is a model call).")
    max_message_chars: int = Field(8000, ge=100, description="Longest client message or conversation accepted.")
    db: str = Field("serve.sqlite", description="The SQLite file (audit log, decisions, consent, gate counts).")
    host: str = Field("127.0.0.1", description="Bind address; keep loopback and put a TLS proxy in front.")
    port: int = Field(8100, ge=0, le=65535)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        from ..safety.responses import load_resources

        if self.locale not in load_resources():
            raise ValueError(f"locale {self.locale!r} has no crisis resources (known: "
                             f"{', '.join(sorted(load_resources()))})")
        if self.n_default > self.n_max:
            raise ValueError("n_default is larger than n_max")
        return self

    @property
    def remote(self) -> bool:
        """Whether drafting sends text off this machine: any backend URL that is not loopback."""
        return self.backend.type == "openai" and any(not is_loopback(u) for u in self.backend.base_urls)

    @property
    def scrubs(self) -> bool:
        return self.policy.scrub_pii == "always" or (self.policy.scrub_pii == "remote" and self.remote)


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_serve_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ServeConfig:
    """The deployment file (or the defaults), with dotted ``key=value`` overrides; mistakes are one UserError line."""
    return load_yaml_config(ServeConfig, path, overrides)
