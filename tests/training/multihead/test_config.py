"""The per-principle reward model's config and principle weights: presets, overrides, one-line errors."""

from pathlib import Path

import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.multihead.config import load_multihead_config, parse_weights, resolve_weights

CONFIG = Path(__file__).parents[3] / "configs" / "train" / "multihead_cpu.yaml"


@pytest.mark.parametrize("weights, message", [
    ({"saftey": 2}, "unknown principle 'saftey'"),
    ({"safety": -1}, "'safety' must be a finite number >= 0"),
    ({"safety": float("nan")}, "must be a finite number"),
    ({k: 0 for k in PRINCIPLE_KEYS}, "at least one principle"),
    ({"safety": "high"}, "must be a number"),
])
def test_bad_weights_are_one_line_errors(weights, message):
    with pytest.raises(UserError, match=message) as e:
        resolve_weights(PRINCIPLE_KEYS, weights)
    assert "\n" not in str(e.value)


def test_parse_weights_and_config_errors(tmp_path):
    assert parse_weights("safety=3, empathy=0.5") == {"safety": 3.0, "empathy": 0.5}
    with pytest.raises(UserError, match="key=number"):
        parse_weights("safety")
    cfg = load_multihead_config(CONFIG, ["weights.safety=3", "model=x"])
    assert cfg.weights == {"safety": 3} and cfg.model == "x" and cfg.train_layers == 4
    with pytest.raises(UserError, match="lamda"):
        load_multihead_config(CONFIG, ["lamda=2"])
    with pytest.raises(UserError, match="model: Field required"):
        load_multihead_config(None, [])
