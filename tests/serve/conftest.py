import sys
from pathlib import Path

# The drafting-assistant tests share helpers.py (a deployment over the fake server, a hand-checkable scorer).
sys.path.insert(0, str(Path(__file__).parent))
