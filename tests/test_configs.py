"""Every YAML shipped under configs/ loads with the loader its folder names, so a renamed key never ships.

A new config folder needs a line in ``LOADERS``; a new file in a known folder is picked up by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from psychocounsel.config import RunConfig, load_config, load_yaml_config
from psychocounsel.evaluation.config import EvalConfig, SuiteRunConfig
from psychocounsel.training.dpo.config import load_dpo_config
from psychocounsel.training.multihead.config import load_multihead_config
from psychocounsel.training.online_dpo.config import load_online_dpo_config
from psychocounsel.training.reward.config import load_reward_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN = {"rm": load_reward_config, "multihead": load_multihead_config, "dpo": load_dpo_config,
         "online_dpo": load_online_dpo_config}
# the keys `accelerate launch --config_file` needs to pick a launcher (accelerate's own config schema)
ACCELERATE_KEYS = {"compute_environment", "distributed_type", "num_processes"}


def _train_loader(path: Path):
    recipe = next(k for k in sorted(TRAIN, key=len, reverse=True) if path.stem.startswith(k + "_"))
    return TRAIN[recipe](path)


def _accelerate(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    missing = ACCELERATE_KEYS - set(data)
    assert not missing, f"{path.name}: missing {sorted(missing)}"
    return data


LOADERS = {
    ".": lambda p: _serve_config(p) if p.stem.startswith("serve") else load_config(p),
    "eval": lambda p: load_yaml_config(SuiteRunConfig if p.name.startswith("suite") else EvalConfig, p),
    "train": _train_loader,
    "accelerate": _accelerate,
    "sessions": lambda p: _sessions_loader(p)(p),
}


def _sessions_loader(path: Path):
    from psychocounsel.sessions.config import load_simulate_config
    from psychocounsel.sessions.judge_config import (
        load_compare_config,
        load_judge_config,
    )

    return {"judge": load_judge_config, "compare": load_compare_config}.get(path.stem.split("_")[0],
                                                                             load_simulate_config)


def _serve_config(path: Path):
    from psychocounsel.serve.config import load_serve_config

    return load_serve_config(path)


SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def test_every_config_folder_has_a_loader():
    folders = {str(p.parent.relative_to(CONFIGS)) for p in SHIPPED}
    assert folders <= set(LOADERS), folders - set(LOADERS)
    assert len(SHIPPED) >= 15


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads(path):
    loaded = LOADERS[str(path.parent.relative_to(CONFIGS))](path)
    assert loaded is not None
    if isinstance(loaded, RunConfig):  # every profile and the judge name a backend the config defines
        names = set(loaded.backends)
        assert {p.backend for p in loaded.therapists.profiles} <= names and loaded.judge.backend in names
