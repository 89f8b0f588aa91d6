"""The training package's shape: every recipe's command module loads without torch or TRL (the command line
imports all four at start, so ``psychocounsel --help`` stays quick), and so does the scorer loader."""

import subprocess
import sys

import pytest

MODULES = ["psychocounsel.training.reward.recipe", "psychocounsel.training.multihead.recipe",
           "psychocounsel.training.dpo.recipe", "psychocounsel.training.online_dpo.recipe",
           "psychocounsel.training.scoring"]


@pytest.mark.parametrize("module", MODULES)
def test_command_modules_load_without_torch(module):
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'trl', 'transformers', 'peft') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} imports {out} at load"
