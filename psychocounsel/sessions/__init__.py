"""Simulated multi-turn counseling sessions: client profiles and a client simulator that talks with a therapist
policy (``simulate``), and the judges, safety-flow checklist, reports and leaderboard that read the transcripts
(``judge-sessions``, ``compare-sessions``, ``session-report``, ``session-leaderboard``). docs/SESSIONS.md.
"""
