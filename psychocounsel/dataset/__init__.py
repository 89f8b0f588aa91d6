"""The preference-data pipeline: ingest -> generate -> judge -> pairs -> stats (``psychocounsel run``).

``pipeline.py`` wires the stages to the run store; ``session.py`` is the run folder every stage (and the
evaluation) shares; ``ingest.py``/``dedup.py``/``pii/`` clean speeches; ``generate.py`` builds therapist
requests; ``pairs.py`` builds and writes pairs in the released schema; ``stats.py`` reports on them.
"""
