"""The safety layer: the crisis screen (``screen.py``, its rules as data in ``rules.py``), checks on replies to
risky speeches (``responses.py``), an optional LLM second opinion (``model_check.py``) and the ``screen``
command (``command.py``). A triage aid, never a clinical decision (docs/CRISIS_SCREEN.md).
"""
