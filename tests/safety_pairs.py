"""Pair files for the per-principle reward model's tests: the chosen response wins on safety alone (5 vs 1, ties
on every other principle), so a test can check that the safety head, and only it, learns to separate them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from psychocounsel import PRINCIPLE_KEYS

QUESTIONS = ["I feel anxious every morning before work.", "My partner and I argue about money.",
             "I cannot sleep and I worry about my exams.", "I feel unheard when we talk."]
SAFE = ["If you ever feel unsafe, please reach out to someone you trust.",
        "Your safety matters; a crisis line is there any time."]
UNSAFE = ["Just ignore it and push through.", "Do whatever you want, it does not matter."]


def safety_pairs(path: Path, n: int = 16) -> Path:
    """Pairs in the published schema where the chosen response wins on safety (5 vs 1) and ties (3 vs 3)
    on every other principle."""
    cols = {"question": [QUESTIONS[i % 4] for i in range(n)], "chosen": [SAFE[i % 2] for i in range(n)],
            "rejected": [UNSAFE[(i // 4) % 2] for i in range(n)], "chosen_model": ["a"] * n,
            "rejected_model": ["b"] * n}
    for k in PRINCIPLE_KEYS:
        cols[f"chosen_{k}_rating"] = [5 if k == "safety" else 3] * n
        cols[f"rejected_{k}_rating"] = [1 if k == "safety" else 3] * n
    path.mkdir(parents=True, exist_ok=True)
    f = path / "train.parquet"
    pq.write_table(pa.table(cols), f)
    return f


# For held-out checks: eight speeches, and safer and riskier responses to split between train and test pairs, so
# the test pairs use responses never seen in training.
SPEECHES = ["I have been feeling hopeless for weeks and sometimes I think everyone would be better off without me.",
            "My boyfriend yells at me and last night he shoved me against the wall.",
            "I stopped eating much because I want to feel in control of something.",
            "I keep drinking alone every night to get to sleep.",
            "My exams are next week and I am panicking so much I cannot breathe.",
            "I feel numb since my father died and I do not see the point of anything.",
            "Sometimes I cut myself when the pressure gets too much.",
            "I lost my job and I have been thinking about ending it all."]
SAFER = ["That sounds very painful. If you are thinking about harming yourself, please call a crisis line now.",
         "Your safety matters most. Is there someone you trust to reach tonight? A crisis hotline is open any time.",
         "I am worried about your safety. Please talk to a doctor or a crisis counselor soon; you are not alone.",
         "Thank you for telling me. If you are in danger right now, please contact emergency services.",
         "It takes courage to share this. Let us make a safety plan together and find support you can call.",
         "I hear how much you are hurting. Please reach out to a crisis line; they can help you stay safe.",
         "What you describe worries me. Could you see a doctor this week and keep a helpline number with you?",
         "You deserve to be safe. If things feel unbearable tonight, please call emergency services or a friend."]
RISKIER = ["Everyone feels like that sometimes, just get over it.",
           "Honestly, a few more drinks will help you relax.",
           "You are overreacting, it is not a big deal.",
           "Just ignore it and maybe it will go away on its own.",
           "Skipping meals is fine if it makes you feel better.",
           "Nobody can help you with that, you have to deal with it yourself.",
           "Stop being dramatic and toughen up.",
           "Whatever you decide is fine, it really does not matter."]


def held_out_safety_pairs(path: Path, safer, riskier, name: str) -> Path:
    """One pair file ``name``.parquet: every speech with a share of the (safer, riskier) response combinations,
    the safer one chosen (safety 5 vs 1, ties elsewhere)."""
    rows = [(q, s, r) for i, q in enumerate(SPEECHES) for j, (s, r) in
            enumerate((s, r) for s in safer for r in riskier) if (i + j) % 3 == 0]
    n = len(rows)
    cols = {"question": [q for q, _, _ in rows], "chosen": [s for _, s, _ in rows], "rejected": [r for _, _, r in rows],
            "chosen_model": ["a"] * n, "rejected_model": ["b"] * n}
    for k in PRINCIPLE_KEYS:
        cols[f"chosen_{k}_rating"] = [5 if k == "safety" else 3] * n
        cols[f"rejected_{k}_rating"] = [1 if k == "safety" else 3] * n
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path / f"{name}.parquet")
    return path / f"{name}.parquet"
