"""The therapist request both pipelines send: system prompt, tag, length cap, and how an empty prompt goes."""

from types import SimpleNamespace

from psychocounsel.config import SamplingConfig
from psychocounsel.dataset.generate import therapist_request
from psychocounsel.dataset.session import EVAL_KEYS, RUN_KEYS
from psychocounsel.rubric.prompts import load_prompt

PROMPT = load_prompt("therapist_v1")
SAMPLING = SamplingConfig(temperature=0.7, max_tokens=512, seed=5)
SPEECH = "I can't sleep before exams and my parents keep asking about my grades."


def request(system_prompt=None, **kw):
    kw.setdefault("fingerprint", RUN_KEYS)
    return therapist_request(SPEECH, model="m", system_prompt=system_prompt, sampling=SAMPLING, prompt=PROMPT, **kw)


def test_the_versioned_prompt_or_a_profiles_own_named_in_the_tag():
    req = request()
    assert req.messages == (("system", PROMPT.text), ("user", SPEECH)) and req.tag == PROMPT.version
    assert (req.sampling.temperature, req.sampling.max_tokens, req.sampling.seed) == (0.7, 512, 5)
    own = request("Be brief.")
    assert own.messages[0] == ("system", "Be brief.") and own.tag == "custom:" + RUN_KEYS("Be brief.")
    assert request("Be brief.", fingerprint=EVAL_KEYS).tag == "custom:" + EVAL_KEYS("Be brief.")


def test_data_runs_send_the_system_prompt_verbatim_evaluations_tidy_it():
    assert request(" Be brief.\n").messages[0] == ("system", " Be brief.\n")
    assert request("").messages == (("system", ""), ("user", SPEECH))
    assert request(" Be brief.\n", tidy=True).messages[0] == ("system", "Be brief.")
    assert request("", tidy=True).messages == (("user", SPEECH),)  # the bare speech, as the paper's policy saw it


def test_length_cap_adds_the_word_limit_and_caps_tokens():
    cap = SimpleNamespace(words=100, max_tokens=160, instruction="Keep your reply under {words} words.")
    req = request(cap=cap, tidy=True)
    assert req.messages[0][1].endswith("\n\nKeep your reply under 100 words.")
    assert req.sampling.max_tokens == 160 and req.tag == f"{PROMPT.version}|lencap:100:160"
    assert request(cap=SimpleNamespace(words=100, max_tokens=900, instruction="x")).sampling.max_tokens == 512
