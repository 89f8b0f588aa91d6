"""The ``openai`` backend: any OpenAI-compatible chat-completions server, over a lean HTTP/1.1 client.

Why not the official ``openai`` client: on 2 cores with a server adding 50 ms, a bare loop over
``AsyncOpenAI`` spends 1.6-2.3 ms of client CPU per request and reaches ~600 req/s at 64 in flight
(47% of the 1,280 req/s bound) and ~440 at 256 (9%); aiohttp still spends 0.45 ms. This module
speaks HTTP/1.1 itself on an asyncio ``Protocol``: one write per request, keep-alive connections
pooled per replica, replies framed by Content-Length, chunked encoding or connection close, JSON
through orjson (the messages' JSON strings shared with the cache key). Measured: 0.05-0.08 ms of
CPU per request, ~1,200 req/s (94%) at 64 in flight and ~4,300 req/s at 256 (``bench/bench_http.py``). When an HTTP proxy applies
(HTTPS_PROXY etc.), or ``PSYCHOCOUNSEL_HTTP_CLIENT=aiohttp`` is set, requests go through aiohttp
instead, which speaks proxies.

Around each call: a concurrency semaphore, optional RPM/TPM buckets (``ratelimit.py``), retries on
408/409/429/5xx/timeouts/connection errors with exponential backoff and full jitter that honour
``Retry-After`` (capped at ``backoff_max_s``), and spreading over several base URLs by fewest
requests in flight, a failed attempt moving to another replica. Other 4xx fail at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import os
import random
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..config import OpenAIBackendConfig
from ..errors import BackendError, UserError
from .base import ChatRequest, Completion
from .http11 import AiohttpReplica, Replica, ssl_context
from .ratelimit import RateLimiter

RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass
class Usage:
    """What a backend spent, printed by the CLI. Cost is None unless both prices are configured."""

    requests: int = 0  # calls that returned a completion
    retries: int = 0  # extra attempts after a retryable failure
    failures: int = 0  # calls that raised BackendError
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None

    @property
    def cost_usd(self) -> float | None:
        if self.price_input_per_mtok is None or self.price_output_per_mtok is None:
            return None
        return (self.prompt_tokens * self.price_input_per_mtok
                + self.completion_tokens * self.price_output_per_mtok) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd}

    def __str__(self) -> str:
        cost = "" if self.cost_usd is None else f", ${self.cost_usd:.4f}"
        return (f"{self.requests} requests, {self.retries} retries, {self.failures} failures, "
                f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens{cost}")


def _retry_after(headers: dict[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI), ``Retry-After`` seconds, or an HTTP date."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _family(base_urls: list[str]) -> str:
    """The endpoint family for cache keys: public hosts by name, private/loopback as 'self-hosted'.

    Why: replicas of one self-hosted model (10.0.0.5:8000, 10.0.0.6:8000) must share cached
    answers, so adding a replica keeps the cache; a public API is named by its host.
    """
    names = set()
    for url in base_urls:
        host = (urlsplit(url).hostname or "").lower()
        try:
            ip = ipaddress.ip_address(host)
            private = ip.is_private or ip.is_loopback or ip.is_link_local
        except ValueError:
            private = "." not in host or host.endswith((".local", ".internal", ".lan", ".localhost"))
        names.add("self-hosted" if private else host)
    return ",".join(sorted(names))


def _use_aiohttp(url: str) -> bool:
    if os.environ.get("PSYCHOCOUNSEL_HTTP_CLIENT", "").lower() == "aiohttp":
        return True
    host = urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(urlsplit(url).scheme)) and not urllib.request.proxy_bypass(host)


class OpenAIBackend:
    """OpenAI-compatible chat completions with limits, retries and replica spreading."""

    def __init__(self, cfg: OpenAIBackendConfig):
        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if not key and any((urlsplit(u).hostname or "").endswith("openai.com") for u in cfg.base_urls):
            where = (f"environment variable {cfg.api_key_env} is not set" if cfg.api_key_env
                     else "api_key_env is empty")
            raise UserError(f"backend openai: {where}; api.openai.com needs an API key")
        if key and any(c in key for c in "\r\n"):
            raise UserError(f"backend openai: environment variable {cfg.api_key_env} holds a line break")
        auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
        ssl_ctx = ssl_context() if any(u.startswith("https") for u in cfg.base_urls) else None
        self.replicas = [(AiohttpReplica if _use_aiohttp(u) else Replica)(u, auth, ssl_ctx)
                         for u in cfg.base_urls]
        self.limiter = RateLimiter(cfg.rpm, cfg.tpm)
        self.usage = Usage(price_input_per_mtok=cfg.price_input_per_mtok,
                           price_output_per_mtok=cfg.price_output_per_mtok)
        self._rr = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._max_tokens_key = "max_tokens"

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_urls={self.cfg.base_urls!r}, api_key_env={self.cfg.api_key_env!r})"

    def identity(self, model: str | None = None) -> dict[str, Any]:
        # a server's weights can't be fingerprinted from here: the model name stands for them
        return {"type": "openai", "family": _family(self.cfg.base_urls)}

    def _encode(self, request: ChatRequest) -> bytes:
        s = request.sampling
        # the messages' JSON strings were encoded once for the cache key; the body reuses them
        messages = b"[" + b",".join([b'{"role":%b,"content":%b}' % rc for rc in request.message_json]) + b"]"
        payload: dict[str, Any] = {"model": request.model, "messages": orjson.Fragment(messages),
                                   "temperature": s.temperature, "top_p": s.top_p,
                                   self._max_tokens_key: s.max_tokens}
        if s.seed is not None:
            payload["seed"] = s.seed
        if request.response_format is not None and self.cfg.structured_output:
            payload["response_format"] = request.response_format
        return orjson.dumps(payload)

    def _pick(self, avoid: Replica | None, now: float) -> Replica:
        """Fewest in flight among healthy replicas, rotating the start so ties spread."""
        reps = self.replicas
        if len(reps) == 1:
            return reps[0]
        self._rr = (self._rr + 1) % len(reps)
        order = reps[self._rr:] + reps[: self._rr]
        pool = [r for r in order if r is not avoid and r.down_until <= now]
        if not pool:
            pool = [r for r in order if r is not avoid] or order
            return min(pool, key=lambda r: r.down_until)
        return min(pool, key=lambda r: r.in_flight)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (AWS architecture blog, 'Exponential Backoff and Jitter'), never under Retry-After."""
        cfg = self.cfg
        delay = random.uniform(0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, cfg.backoff_max_s)

    async def complete(self, request: ChatRequest) -> Completion:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new asyncio.run(): pooled connections belong to the old loop
            for r in self.replicas:
                r.close()
            self._loop, self._sem = loop, asyncio.Semaphore(self.cfg.concurrency)
        body = self._encode(request)
        estimate = sum(len(c) for _, c in request.messages) / 4 + request.sampling.max_tokens
        async with self._sem:
            try:
                return await self._attempts(request, body, estimate, loop)
            except BackendError:
                self.usage.failures += 1
                raise

    async def _attempts(self, request: ChatRequest, body: bytes, estimate: float,
                        loop: asyncio.AbstractEventLoop) -> Completion:
        cfg, attempt, rep, renamed = self.cfg, 0, None, False
        while True:
            if self.limiter.active:
                await self.limiter.acquire(estimate)
            rep = self._pick(rep, loop.time())
            rep.in_flight += 1
            t0 = loop.time()
            status, retry_after = None, None
            try:
                status, headers, data = await rep.post(body, t0 + cfg.timeout_s)
            except TimeoutError:
                error = f"no reply within {cfg.timeout_s:g} s"
            except ssl.SSLCertVerificationError as e:  # retrying cannot fix a certificate
                raise BackendError(f"{rep.url}: TLS certificate not trusted: {e.verify_message}; "
                                   "point SSL_CERT_FILE at your CA bundle", retryable=False) from None
            except (OSError, ssl.SSLError) as e:  # ConnectionError is an OSError
                error = f"connection failed: {e or type(e).__name__}"
            finally:
                rep.in_flight -= 1
            if status == 200:
                try:
                    done = self._completion(data, loop.time() - t0, rep.url, estimate)
                    rep.fails, rep.down_until = 0, 0.0
                    return done
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    error = f"HTTP 200 but the body is not a chat completion ({type(e).__name__})"
            elif status is not None:
                error = f"HTTP {status}: {_error_message(data)}"
                retry_after = _retry_after(headers)
                if status == 400 and not renamed and b"max_completion_tokens" in data:
                    # Newer OpenAI models reject max_tokens by name; switch for good, resend at once.
                    self._max_tokens_key, renamed = "max_completion_tokens", True
                    body = self._encode(request)
                    continue
                if status < 500 and status not in RETRYABLE_STATUS:
                    if status == 400 and b"response_format" in data:
                        error += " (if this server lacks structured output, set structured_output: false)"
                    raise BackendError(f"{rep.url}: {error}", status=status, retryable=False)
            # Steer other calls away from a failing replica for a while (doubling, at most 30 s).
            rep.fails += 1
            rep.down_until = loop.time() + (retry_after if retry_after is not None
                                            else min(30.0, 0.5 * 2 ** rep.fails))
            if attempt >= cfg.max_retries:
                raise BackendError(f"{rep.url}: {error} (after {attempt + 1} attempts)", status=status)
            attempt += 1
            self.usage.retries += 1
            await asyncio.sleep(self._backoff(attempt, retry_after))

    def _completion(self, data: bytes, latency: float, url: str, estimate: float) -> Completion:
        reply = orjson.loads(data)
        choice = reply["choices"][0]
        usage = reply.get("usage") or {}
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        u = self.usage
        u.requests += 1
        u.prompt_tokens += pt
        u.completion_tokens += ct
        if self.limiter.tokens is not None:
            self.limiter.reconcile(estimate, pt + ct)
        return Completion(text=choice["message"].get("content") or "", prompt_tokens=pt, completion_tokens=ct,
                          latency_s=latency, finish_reason=choice.get("finish_reason"),
                          raw=data.decode("utf-8", "replace"), base_url=url)

    async def aclose(self) -> None:
        for r in self.replicas:
            await r.aclose()


def _error_message(data: bytes) -> str:
    """The server's own error message, shortened; never the request (which may be sensitive)."""
    try:
        err = orjson.loads(data)
        msg = err["error"]["message"] if isinstance(err.get("error"), dict) else err.get("error") or err
    except (ValueError, KeyError, TypeError, AttributeError):
        msg = data.decode("utf-8", "replace")
    msg = " ".join(str(msg).split())
    return msg[:300] or "(empty body)"
