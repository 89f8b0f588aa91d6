"""PII scrubbing: find personal details in a client speech and mask them before any text leaves the machine.

``spans`` (kinds, overlap resolution, masking) and the word lists ``words`` and ``regions`` sit at the
bottom; ``contact``, ``places``, ``dates`` and ``names`` find one family of details each; ``scrub`` wires
them, Presidio's checksum-validated ID recognizers and a spaCy NER model into one Presidio
``AnalyzerEngine``; ``score`` measures the result against ``psychocounsel/data/pii_labelled.jsonl``.
What is and is not caught, with numbers: docs/PIPELINE.md, "PII scrubbing".
"""
