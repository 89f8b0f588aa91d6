"""Evaluation: a policy against a reference (``evaluate``, ``leaderboard``), a reward model on pairs
(``eval-rm``, ``score``), and agreement between label files (``agree``).

``session.py`` is one evaluation folder; ``stages.py`` generates and judges; ``results.py`` turns records
into numbers (pure); ``report.py`` writes them; ``evaluate.py`` runs it all and holds the commands.
"""
