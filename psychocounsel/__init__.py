"""psychocounsel: make language models better at responding to clients in psycho-counseling.

A toolkit for helping therapists draft and assess responses, never an unsupervised therapist. One folder
per stage (docs/ARCHITECTURE.md has the map):

    dataset/     client speeches -> therapist responses -> principle scores -> preference pairs -> report
    rubric/      the seven principles, versioned prompts, the principle scorer and the pairwise verdict
    training/    reward models (Bradley-Terry, per-principle), offline DPO, online iterative DPO
    evaluation/  a policy against a reference (both answer orders), reward-model grading, label agreement
    safety/      the crisis screen and the checks on replies to risky speeches
    measures/    pure statistics: win rates, bootstrap intervals, agreement, reward-model metrics
    annotate/    the web app where therapists compare and rate responses
    backends/    any OpenAI-compatible server, or local transformers models (the embedded SmolLM2 default)
    testing/     a fake OpenAI-compatible server, to try everything without a key
"""

__version__ = "0.1.0"

PRINCIPLE_KEYS = ("empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging")
