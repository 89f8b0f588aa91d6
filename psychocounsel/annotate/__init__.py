"""Expert annotation: a small web app where therapists compare and rate responses.

``store.py`` (SQLite), ``sources.py`` (pair files, evaluation folders, session judgings), ``dashboard.py`` (agreement),
``export.py`` (CSV/Parquet), ``payloads.py`` (what a POST may send), ``app.py`` (FastAPI pages + JSON
twins), ``cli.py`` (``psychocounsel annotate``).
See docs/ANNOTATION.md.
"""
