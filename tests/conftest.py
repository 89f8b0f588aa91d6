import os
import sys
from pathlib import Path

# Tests never reach a hub: everything they load ships with the repo or the venv.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["tiny_model"]  # the session-scoped tiny random model fixture, for every test file
