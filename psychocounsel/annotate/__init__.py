"""Expert annotation: a small web app where therapists compare and rate responses (issue 5).

``store.py`` (SQLite), ``sources.py`` (pair files, evaluation folders), ``dashboard.py`` (agreement),
``export.py`` (CSV/Parquet), ``app.py`` (FastAPI pages + JSON twins), ``cli.py`` (``psychocounsel annotate``).
See docs/ANNOTATION.md.
"""
