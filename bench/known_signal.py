"""Does it learn? A reward model from SmolLM2-135M on a preference set with a KNOWN signal.

Chosen responses reflect the client's own words (a quoted fragment of the speech) and feelings and end with an
open question inviting exploration; rejected ones are generic, directive or dismissive. Lengths are kept
comparable, so length alone is not the signal. Split by speech (seeded): ~140 train, ~40 held-out test.

    python bench/known_signal.py                      # build pairs, baseline, train, evaluate
    python bench/known_signal.py --no-baseline -o epochs=1 -o max_length=256

Outputs under bench/out/known_signal/ (git-ignored): pairs/, rm/, results.json.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
SPEECHES = ROOT / "psychocounsel" / "data" / "demo_speeches.jsonl"

FEELINGS = [
    "anxious", "anxiety", "scared", "afraid", "terrified", "worried", "worry", "panic", "nervous", "stressed",
    "overwhelmed", "exhausted", "tired", "numb", "empty", "grey", "lonely", "alone", "isolated", "sad", "down",
    "hopeless", "worthless", "ashamed", "shame", "guilty", "guilt", "angry", "furious", "frustrated", "resentful",
    "hurt", "jealous", "stuck", "lost", "confused", "embarrassed", "heartbroken", "grief", "miss", "cry", "crying",
    "hate", "failure", "useless", "trapped", "burnt out", "burned out", "drained", "invisible", "rejected",
]

CHOSEN = [
    'You said "{frag}". It sounds like that has been weighing on you, and I hear how {feel} this feels. '
    'What is it like for you when that comes up?',
    'When you say "{frag}", I get a sense of how {feel} things have been for you lately. '
    'Could you tell me more about what that feels like inside?',
    'It sounds like "{frag}" really captures where you are right now, and that feeling {feel} makes sense. '
    'What would you most want me to understand about it?',
    'I notice you described it as "{frag}". That sounds genuinely {feel}, and it took courage to say. '
    'What do you make of that feeling when you sit with it?',
    'Hearing you say "{frag}", I imagine you have felt {feel} for a while now. '
    'When did you first start noticing this, and what has it been like?',
    '"{frag}" - those words stay with me, and I can hear how {feel} this is for you. '
    'What part of it feels most important to talk about today?',
    'So part of what is going on is "{frag}", and underneath it there seems to be something {feel}. '
    'How does that land for you as I say it back?',
    'Thank you for sharing that. When you put it as "{frag}", it sounds {feel} and heavy to carry. '
    'What goes through your mind when you notice that?',
]

REJECTED = {
    "generic": [
        "Everyone goes through hard times like this at some point in life. Stay positive, keep your chin up, "
        "and remember that things always get better eventually. Tomorrow is a new day for everyone.",
        "Life has its ups and downs for all of us, and this is just one of the downs. Try to look on the bright "
        "side of things, count your blessings, and good things will come your way soon enough.",
        "A lot of people feel this way sometimes, it is very common and totally normal. Just think happy "
        "thoughts, do some self-care, and try to stay optimistic. Everything happens for a reason in the end.",
        "Hang in there, these things pass for everybody sooner or later. Keep a positive mindset, surround "
        "yourself with good vibes, and you will be fine. Every cloud has a silver lining, after all.",
        "It is normal to struggle now and then, everyone has bad days and bad weeks. Stay strong, keep smiling "
        "and focus on the good things in your life. Time heals everything, so just be patient.",
    ],
    "directive": [
        "You need to stop dwelling on this and take action right away. Stop overthinking everything, make a "
        "list, set three goals for this week and stick to them. Exercise every morning and go to bed earlier.",
        "What you should do is simple. Stop worrying about it, get off your phone, and start a proper routine "
        "today. Go for a run, eat better, and just tell people what you want clearly. That will fix it.",
        "Here is what you have to do: stop avoiding the problem and face it head on. Talk to the person "
        "directly, set firm boundaries, and stop letting this control you. Do it this week, no excuses.",
        "You must stop feeling sorry for yourself and get moving. Stop making excuses, write down a plan, join a "
        "gym and keep yourself busy every evening. Keep busy and you will not have time to feel like this.",
        "The answer is to stop thinking and start doing. You need to quit the things that drain you, stop "
        "checking social media, and follow a strict schedule from tomorrow. Discipline solves most of this.",
    ],
    "dismissive": [
        "That's not a big deal, honestly. Lots of people have it much worse than you do, so you should feel "
        "lucky. I think you are making this into more than it is. Just let it go and move on with things.",
        "Honestly, it doesn't sound that serious to me. You're probably just overreacting a little, and it will "
        "blow over on its own without anyone doing anything. There's no need to make a fuss about it at all.",
        "Come on, that's really nothing to worry about. Everyone deals with stuff like that all the time and "
        "gets over it. You'll forget about this in a week, so it is not worth talking about so much.",
        "I don't really see the problem here, to be honest. It sounds like a pretty normal situation and you "
        "are being too sensitive about it. Try not to take everything so seriously and just relax a bit.",
        "It's really not as bad as you think it is. You are blowing it out of proportion, and there are far "
        "bigger problems in the world. Just toughen up a bit, stop complaining, and get on with your day.",
    ],
}
FEEL_WORD = {  # feeling word found in the speech -> adjective for the template
    "anxiety": "anxious", "worry": "worrying", "panic": "frightening", "shame": "shameful", "guilt": "painful",
    "grief": "painful", "miss": "painful", "cry": "painful", "crying": "painful", "hate": "painful",
    "failure": "painful", "alone": "lonely", "down": "heavy", "burnt out": "draining", "burned out": "draining",
    "grey": "flat and grey",
}
DEFAULT_FEELS = ["hard", "painful", "difficult", "heavy", "exhausting", "confusing"]


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\s*\.\.\.\s*", text.strip())
    return [p.strip(" .!?\"'") for p in parts if len(p.split()) >= 3]


def salient_fragment(text: str, rng: random.Random) -> tuple[str, str]:
    """(fragment of the speech, feeling adjective): prefer a sentence with a feeling word; up to 10 words."""
    sents = _sentences(text) or [text]
    low = text.lower()
    found = [w for w in FEELINGS if re.search(rf"\b{re.escape(w)}\b", low)]
    with_feel = [s for s in sents if any(re.search(rf"\b{re.escape(w)}\b", s.lower()) for w in found)]
    sent = rng.choice(with_feel or sents)
    words = sent.split()
    if len(words) > 10:
        # a window of 10 words, centred on the feeling word when there is one
        idx = next((i for i, w in enumerate(words) if any(f in w.lower() for f in found)), rng.randrange(len(words) - 9))
        start = max(0, min(idx - 4, len(words) - 10))
        words = words[start:start + 10]
    frag = " ".join(words).strip(" ,;:-")
    feel_src = rng.choice(found) if found else None
    feel = FEEL_WORD.get(feel_src, feel_src) if feel_src else rng.choice(DEFAULT_FEELS)
    return frag, feel


def build_pairs(seed: int = 0, n_test: int = 40):
    from psychocounsel import PRINCIPLE_KEYS
    from psychocounsel.dataset.records import Pair, ScoredResponse, text_id

    speeches = [json.loads(line) for line in SPEECHES.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    order = list(range(len(speeches)))
    rng.shuffle(order)
    test_ids = {speeches[i]["id"] for i in order[:n_test]}
    families = list(REJECTED)
    pairs, ratios = [], []
    for k, sp in enumerate(speeches):
        frag, feel = salient_fragment(sp["text"], rng)
        chosen = rng.choice(CHOSEN).format(frag=frag, feel=feel)
        fam = families[k % len(families)]
        rejected = rng.choice(REJECTED[fam])
        ratios.append(len(chosen) / len(rejected))
        c_scores = {p: float(rng.choice([4, 5])) for p in PRINCIPLE_KEYS}
        r_scores = {p: float(rng.choice([1, 2])) for p in PRINCIPLE_KEYS}
        mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
        c = ScoredResponse(text_id(sp["id"], "chosen"), sp["id"], "template-reflective", chosen, c_scores, mean(c_scores))
        r = ScoredResponse(text_id(sp["id"], "rejected"), sp["id"], f"template-{fam}", rejected, r_scores,
                           mean(r_scores))
        split = "test" if sp["id"] in test_ids else "train"
        pairs.append(Pair(split, sp["id"], sp["text"], c, r))
    return pairs, ratios


@click.command()
@click.option("--out", "out_dir", default=str(ROOT / "bench" / "out" / "known_signal"), show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of templates and of the train/test split.")
@click.option("--n-test", default=40, show_default=True, help="Held-out speeches.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also score the test pairs with an untrained model (fresh heads on SmolLM2).")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override the multihead_cpu.yaml config (defaults here: epochs=1 max_length=256 batch_size=4).")
@click.option("--n-boot", default=1000, show_default=True)
def main(out_dir: str, seed: int, n_test: int, baseline: bool, overrides: tuple[str, ...], n_boot: int) -> None:
    import statistics

    from psychocounsel import PRINCIPLE_KEYS
    from psychocounsel.dataset.pairs import write_pairs
    from psychocounsel.evaluation.rm_eval import evaluate_reward_model
    from psychocounsel.training.multihead.config import load_multihead_config
    from psychocounsel.training.multihead.recipe import train_multihead_reward_model
    from psychocounsel.training.scoring import load_scorer

    out = Path(out_dir)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    pairs, ratios = build_pairs(seed, n_test)
    paths = write_pairs(pairs, out / "pairs", formats=("parquet",), principles=PRINCIPLE_KEYS)
    n_train = sum(p.split == "train" for p in pairs)
    print(f"pairs: {n_train} train, {len(pairs) - n_train} test; chosen/rejected length ratio (chars) "
          f"median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}")
    for p in pairs[:2]:
        print(f"  e.g. chosen:   {p.chosen.text}\n       rejected: {p.rejected.text}")
    test_file = paths["test"][0]
    train_file = paths["train"][0]
    timings["build_pairs_s"] = time.perf_counter() - t

    cfg = load_multihead_config(ROOT / "configs" / "train" / "multihead_cpu.yaml",
                                ["epochs=1", "max_length=256", "batch_size=4", f"seed={seed}", *overrides])
    results: dict = {"config": cfg.model_dump(), "n_train": n_train, "n_test": len(pairs) - n_train,
                     "length_ratio_median": statistics.median(ratios)}

    def summary(res: dict) -> dict:
        keep = ("n_pairs", "accuracy", "accuracy_ci", "auc", "roc_auc", "ece", "brier")
        return {k: res[k] for k in keep if k in res} or res

    if baseline:
        t = time.perf_counter()
        from psychocounsel.training.multihead.data import load_tokenizer
        from psychocounsel.training.multihead.model import MultiHeadRewardModel, MultiHeadScorer

        tok = load_tokenizer(cfg.model, cfg.chat_template)
        model = MultiHeadRewardModel.from_backbone(
            cfg.model, list(PRINCIPLE_KEYS), None, max_length=cfg.max_length)
        res = evaluate_reward_model(MultiHeadScorer.from_model(model, tok), test_file, n_boot=n_boot, seed=seed)
        timings["baseline_eval_s"] = time.perf_counter() - t
        results["baseline"] = res
        print("untrained baseline:", json.dumps(summary(res), default=str))
        del model

    t = time.perf_counter()
    metrics = train_multihead_reward_model(cfg, [train_file], out / "rm", overwrite=True)
    timings["train_total_s"] = time.perf_counter() - t
    results["train"] = metrics
    print("train:", json.dumps({k: metrics[k] for k in ("train_pairs", "overlong_pairs", "train_loss", "steps",
                                                         "train_seconds", "train_tokens_per_s", "loss_history")}))

    t = time.perf_counter()
    res = evaluate_reward_model(load_scorer(out / "rm"), test_file, n_boot=n_boot, seed=seed, out_dir=out / "eval")
    timings["eval_s"] = time.perf_counter() - t
    results["trained"] = res
    results["timings"] = timings
    print("trained, held-out:", json.dumps(summary(res), default=str))
    print("timings (2 shared CPU cores):", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
