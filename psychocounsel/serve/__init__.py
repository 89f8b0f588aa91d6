"""``psychocounsel serve``: the clinician-in-the-loop drafting assistant, crisis gate first.

A clinician pastes a client's message; the crisis gate screens it (``gate.py``), the policy backend writes N
drafts under a safety instruction when the message shows risk, every draft is re-checked by the reply checks
and ranked by the reward model (``drafts.py``, ``service.py``), and the clinician edits, approves or rejects
(``decisions.py``). Nothing is ever sent to a client. ``app.py`` serves the pages and their JSON twins,
``openai_api.py`` and ``reward_api.py`` the machine APIs; ``store.py`` keeps the audit log, decisions and
consent (client text only when the deployment's policy turns storage on). Guide: docs/SERVE.md.
"""
