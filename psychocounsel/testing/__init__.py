"""A fake OpenAI-compatible server (``fakeserver.py``) that plays every model the toolkit asks for, with
fault injection: how users try the toolkit without a key, and how the tests and benches exercise the client.
"""
