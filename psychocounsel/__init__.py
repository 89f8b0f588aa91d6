"""psychocounsel: preference learning for psycho-counseling responses.

Stages (one module each, pure core + thin CLI in ``cli.py``):
ingest -> generate -> judge -> pairs -> stats. See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"

PRINCIPLE_KEYS = ("empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging")
