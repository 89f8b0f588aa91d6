"""What a judge is asked and how its answers are read: principles, versioned prompts, the principle scorer
(JSON or G-Eval, ``score.py``) and the pairwise verdict (``pairwise.py``). Pure: no I/O, no model calls.
"""
