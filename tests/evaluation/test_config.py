"""Evaluation configs: a mistake is one line naming the field (every shipped one loads: tests/test_configs.py)."""

import pytest

from psychocounsel.config import load_yaml_config
from psychocounsel.errors import UserError
from psychocounsel.evaluation.config import EvalConfig


def test_bad_config_is_one_line():
    with pytest.raises(UserError, match="policy"):
        load_yaml_config(EvalConfig, None, updates={"name": "x", "speeches": {"path": "demo"},
                                                    "policy": {"name": "p"}, "reference": {"name": "r", "responses": "f"},
                                                    "pairwise": {"backend": "b", "model": "m"}})
