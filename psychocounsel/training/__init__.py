"""Training recipes: reward models (Bradley-Terry, per-principle), offline DPO, online iterative DPO.

Each recipe is a folder: ``config.py`` at the bottom (its typed config, the lowest-level fact), the data, model
and trainer pieces above it, and ``recipe.py`` on top (the run and the click command ``cli.py`` registers).
Shared by all of them: ``common`` (pair files -> chat datasets, manifests, model loading), ``batching``
(length-grouped batches), ``distributed`` (``accelerate launch`` plumbing), ``lora`` (LoRA settings),
``flops`` (MFU accounting) and ``scoring`` (the ``Scorer`` protocol and ``load_scorer``, which serves a
checkpoint of either reward-model kind).
"""
