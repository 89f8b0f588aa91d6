"""What every training recipe shares: pair files -> chat datasets, data hashes, run manifests.

The paper's reward model reads a chat: user = the client's speech, assistant = the therapist's
response (max length 2048). Every recipe here takes our pair files and the published
PsychoCounsel-Preference parquet alike (``pair_reader.load_pair_table`` normalises both).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import PRINCIPLE_KEYS, __version__
from ..errors import UserError


def chat(question: str, response: str | None = None) -> list[dict[str, str]]:
    """The conversation a reward model or policy sees: the speech as the user turn, the response (if any)
    as the assistant turn."""
    msgs = [{"role": "user", "content": question}]
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def pair_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """One pair file, several, or a folder of them (``*.parquet`` first, else ``*.jsonl``; not recursive)."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = sorted(p.glob("*.parquet")) or sorted(p.glob("*.jsonl"))
            if not files:
                raise UserError(f"{p}: no .parquet or .jsonl pair files in folder")
            out += files
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"{p}: pair file not found")
    return out


def load_pairs_dataset(spec: str | Path | Sequence[str | Path], split: str | None = None,
                       principles: Sequence[str] | None = None):
    """Pair files -> a ``datasets.Dataset`` in TRL's conversational preference format.

    Columns: ``prompt`` (user turn), ``chosen`` / ``rejected`` (assistant turns), ``question``,
    ``chosen_text`` / ``rejected_text``, ``margin`` (overall score gap, for an optional margin loss),
    ``chosen_ratings`` / ``rejected_ratings`` (one float per principle, in ``principles`` order), ``split``.
    ``split`` keeps only rows of that split (files named train/dev/test carry it).
    """
    import datasets
    import pyarrow as pa

    from ..dataset.pair_reader import load_pair_table

    import pyarrow.compute as pc

    # load_pair_table labels rows with their file's split (train-00000-of-00001.parquet -> train)
    tables = [load_pair_table(f, principles=principles) for f in pair_files(spec)]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    if table.num_rows == 0:
        raise UserError(f"{spec}: no pairs{' in split ' + repr(split) if split else ''}")
    keys = list(principles or [k for k in PRINCIPLE_KEYS if f"chosen_{k}_rating" in table.column_names])
    cols = table.to_pydict()
    rows = []
    for i, q in enumerate(cols["question"]):
        cr = [float(cols[f"chosen_{k}_rating"][i]) for k in keys]
        rr = [float(cols[f"rejected_{k}_rating"][i]) for k in keys]
        cs = cols.get("chosen_score", [None] * len(cols["question"]))[i]
        rs = cols.get("rejected_score", [None] * len(cols["question"]))[i]
        margin = (cs - rs) if cs is not None and rs is not None else (sum(cr) - sum(rr)) / max(len(keys), 1)
        rows.append({
            "prompt": chat(q), "chosen": [{"role": "assistant", "content": cols["chosen"][i]}],
            "rejected": [{"role": "assistant", "content": cols["rejected"][i]}],
            "question": q, "chosen_text": cols["chosen"][i], "rejected_text": cols["rejected"][i],
            "margin": float(margin), "chosen_ratings": cr, "rejected_ratings": rr,
            "split": cols["split"][i],
        })
    ds = datasets.Dataset.from_list(rows)
    ds.info.description = json.dumps({"principles": keys})
    return ds


def data_hash(paths: Iterable[Path]) -> str:
    """Content hash of the training data files (goes into every manifest)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"psychocounsel": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def write_manifest(out_dir: str | Path, *, recipe: str, config: dict[str, Any], data: Sequence[Path],
                   metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """``manifest.json`` beside a checkpoint: what made it (versions, data hash, resolved config, metrics)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "recipe": recipe, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": library_versions(), "data": [str(p) for p in data], "data_hash": data_hash(data),
        "config": config, "metrics": metrics, **(extra or {}),
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def trainable_gguf_kwargs(src: Any) -> dict[str, Any]:
    """``from_pretrained`` keywords for a model source that will be trained: a GGUF file is unpacked to dense
    weights at load (``GgufConfig(dequantize=True)``); otherwise transformers marks the model quantized and
    the Trainer refuses to fine-tune it, and ``save_pretrained`` to save it."""
    if not getattr(src, "gguf_file", None):
        return {}
    from transformers import GgufConfig

    return {"gguf_file": src.gguf_file, "quantization_config": GgufConfig(dequantize=True)}


def load_causal_lm(name: str, dtype: Any = None, chat_template: str | None = None):
    """(source, model, tokenizer) of a causal LM to train: a checkpoint folder, a .gguf file, "embedded"
    or a hub id. ``chat_template`` (a Jinja string or a file) fills in a tokenizer that has none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..backends.local_models import resolve_model

    src = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.location, **({"gguf_file": src.gguf_file} if src.gguf_file else {}))
        model = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype, **trainable_gguf_kwargs(src))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model {name!r}: cannot load: {first}") from None
    if chat_template:
        t = Path(chat_template)
        tokenizer.chat_template = t.read_text(encoding="utf-8") if t.is_file() else chat_template
    if not tokenizer.chat_template:
        raise UserError(f"model {name!r}: tokenizer has no chat template: set chat_template in the config")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return src, model, tokenizer


def check_same_run(where: Any, before: dict[str, Any], now: dict[str, Any], data: str = "the pair files") -> None:
    """A resumed run must be the run that started: same data hash, same config fields (``now["config"]``
    lists the fields that matter). Anything else is a one-line UserError, never a silent mix."""
    if before.get("data_hash") != now["data_hash"]:
        raise UserError(f"{where}: {data} changed since this run started: pick another --out")
    diff = [k for k in now["config"] if before["config"].get(k) != now["config"][k]]
    if diff:
        raise UserError(f"{where}: config field {diff[0]!r} changed since this run started "
                        f"({before['config'].get(diff[0])!r} -> {now['config'][diff[0]]!r}): pick another --out")


def freeze_below(backbone: Any, top: int) -> tuple[int, int]:
    """Freeze the embeddings and all but the top ``top`` blocks (the longest ModuleList, which is the decoder
    stack in every causal LM in transformers). Returns (trainable, total) parameter counts.

    Frozen layers at the bottom keep no activations and get no backward pass: SmolLM2-135M on 2 busy CPU cores
    trained 132-141 tokens/s with its top 4 of 30 blocks vs 26-35 whole (measured back to back)."""
    from torch import nn

    stacks = [m for m in backbone.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise UserError("train_layers: the backbone has no list of transformer blocks to freeze")
    blocks = max(stacks, key=len)
    keep = {id(p) for b in list(blocks)[len(blocks) - min(top, len(blocks)):] for p in b.parameters()}
    frozen = {id(p) for p in blocks.parameters()} - keep
    frozen |= {id(p) for m in backbone.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    for p in backbone.parameters():
        p.requires_grad_(id(p) not in frozen)
    params = list(backbone.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
