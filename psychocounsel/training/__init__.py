"""Training recipes: reward models (Bradley-Terry, per-principle), offline DPO, online iterative DPO.

Each recipe is one module with a typed config, a pure core and a click command that ``cli.py``
registers. ``common.py`` holds what they share.
"""
