"""Pure statistics, no files and no commands: win rates and the length-controlled GLM (``winrate.py``),
bootstrap intervals (``bootstrap.py``), agreement (``agreement.py``), reward-model metrics (``rm_metrics.py``).
"""
