"""The safety layer: the crisis screen (``screen.py``, its rules as data in ``rules.py``), checks on
any reply (``responses.py``; crisis numbers per locale in ``data/crisis_resources.yaml``), optional LLM second
opinions on a speech (``model_check.py``) and on a reply (``reply_model_check.py``) and the ``screen``
command (``command.py``). A triage aid, never a clinical decision (docs/CRISIS_SCREEN.md).
"""
