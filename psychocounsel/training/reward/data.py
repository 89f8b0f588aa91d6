"""``train-rm`` data: pair files -> token ids, with over-long pairs counted (see ``training.reward``'s docstring
for the rules: truncate as OpenRLHF does or drop as TRL does; held-out rows never train)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...errors import UserError
from ..common import load_pairs_dataset, pair_files
from .config import RewardModelConfig


@dataclass
class TokenizedPairs:
    """Token ids ready for ``RewardTrainer`` plus the over-long accounting for one split."""

    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    margins: list[float]
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dataset(self, with_margin: bool, packed: bool = False):
        """``packed``: the pairs will be packed one row each (shared prefix once), so a batch pads to its longest
        packed row; else to its longest sequence. That width is the ``length`` column, the key of
        length-grouped batches."""
        import datasets

        def width(c: list[int], r: list[int]) -> int:
            if not packed:
                return max(len(c), len(r))
            shared = next((i for i, (a, b) in enumerate(zip(c, r)) if a != b), min(len(c), len(r)))
            return len(c) + len(r) - shared

        cols: dict[str, Any] = {"chosen_ids": self.chosen_ids, "rejected_ids": self.rejected_ids,
                                "length": [width(c, r) for c, r in zip(self.chosen_ids, self.rejected_ids)]}
        if with_margin:  # TRL subtracts a "margin" column whenever the batch has one
            cols["margin"] = self.margins
        return datasets.Dataset.from_dict(cols)


def tokenize_pairs(ds, tokenizer, max_length: int, overlong: str = "truncate", margin_scale: float = 1.0,
                   chunk: int = 1000) -> TokenizedPairs:
    """Chat-template each (speech, response) of a ``load_pairs_dataset`` table; count and handle over-long pairs.

    ``overlong='truncate'``: keep the first ``max_length - 1`` tokens and the last one; ``'drop'``: drop the pair.
    """
    chosen: list[list[int]] = []
    rejected: list[list[int]] = []
    for start in range(0, len(ds), chunk):
        part = ds[start:start + chunk]
        convs_c = [p + c for p, c in zip(part["prompt"], part["chosen"])]
        convs_r = [p + r for p, r in zip(part["prompt"], part["rejected"])]
        try:
            chosen += tokenizer.apply_chat_template(convs_c, tokenize=True, return_dict=True)["input_ids"]
            rejected += tokenizer.apply_chat_template(convs_r, tokenize=True, return_dict=True)["input_ids"]
        except Exception as e:  # jinja errors ("System role not supported", ...): one line for the user
            raise UserError(f"chat template failed: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    margins = [float(m) * margin_scale for m in ds["margin"]]
    out = TokenizedPairs([], [], [])
    n_over = n_identical = 0
    longest = 0
    for c, r, m in zip(chosen, rejected, margins):
        longest = max(longest, len(c), len(r))
        if max(len(c), len(r)) > max_length:
            n_over += 1
            if overlong == "drop":
                continue
            c, r = _truncate(c, max_length), _truncate(r, max_length)
            if c == r:  # the prompt alone filled max_length: both responses are gone
                n_identical += 1
                continue
        out.chosen_ids.append(c)
        out.rejected_ids.append(r)
        out.margins.append(m)
    out.stats = {"pairs": len(chosen), "overlong": n_over, "action": overlong,
                 "dropped": len(chosen) - len(out.chosen_ids), "no_response_left": n_identical,
                 "kept": len(out.chosen_ids), "max_length": max_length, "longest_tokens": longest}
    return out


def _truncate(ids: list[int], max_length: int) -> list[int]:
    return ids if len(ids) <= max_length else ids[:max_length - 1] + ids[-1:]


def describe_overlong(name: str, s: dict[str, Any]) -> str:
    line = f"{name}: {s['overlong']} of {s['pairs']} pairs longer than {s['max_length']} tokens"
    if not s["overlong"]:
        return line + f" (longest {s['longest_tokens']})"
    if s["action"] == "drop":
        return line + f": dropped ({s['kept']} kept)"
    extra = f", {s['no_response_left']} dropped (prompt alone fills max_length)" if s["no_response_left"] else ""
    return line + f": truncated{extra}"


def _split_rows(labels: list[str], train_split: str | None) -> list[bool]:
    if train_split is None:
        train_split = "train" if "train" in labels else None
    return [train_split is None or s == train_split for s in labels]


def _select(ds, keep: Sequence[bool]):
    return ds.select([i for i, k in enumerate(keep) if k])


def load_training_data(cfg: RewardModelConfig) -> tuple[Any, dict[str, Any], list[Path]]:
    """(train rows, {eval split: rows}, every data file): the split rules in ``training.reward``'s docstring."""
    train_files = pair_files(cfg.train_pairs)
    ds = load_pairs_dataset(train_files)
    is_train = _split_rows(ds["split"], cfg.train_split)
    train = _select(ds, is_train)
    if len(train) == 0:
        raise UserError(f"{cfg.train_pairs}: no pairs in split {cfg.train_split!r} (splits: "
                        f"{sorted(set(ds['split']))})")
    files = list(train_files)
    if cfg.eval_pairs is not None:
        eval_files = pair_files(cfg.eval_pairs)
        held = load_pairs_dataset(eval_files)
        files += [f for f in eval_files if f not in files]
    else:
        held = _select(ds, [not t for t in is_train])
    labels = held["split"] if len(held) else []
    wanted = cfg.eval_splits if cfg.eval_splits is not None else sorted(set(labels))
    evals = {s: _select(held, [x == s for x in labels]) for s in wanted if s in labels}
    if cfg.eval_pairs is not None and not evals:
        raise UserError(f"{cfg.eval_pairs}: no pairs in splits {wanted} (found {sorted(set(labels))}); "
                        "set eval_splits")
    return train, evals, files
