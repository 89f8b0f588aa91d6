"""A fast OpenAI-compatible chat-completions server with fault injection, for tests and benches.

Why it exists: the ``openai`` backend, the pipeline's reliability tests and ``bench/bench_http.py``
need a server that answers like vLLM or OpenAI, adds a fixed latency (a model "thinking"), and can
misbehave on purpose (500s, 429s with Retry-After, hangs, garbled judge replies, dropped or cut
connections). It runs in its own process so the client's CPU time can be measured apart from it,
and it is a raw asyncio ``Protocol`` (uvloop when installed) so that at 50 ms latency and 256 in
flight (5,120 req/s bound) it is not the bottleneck.

Replies: one server plays every role the toolkit asks of a model. A request whose
``response_format`` carries a JSON schema gets an object that fits that schema, each field drawn from
a hash of the last user message: the seven-principle judge gets integer scores 1-5, the pairwise judge
a ``winner`` of "A", "B" or "tie", the crisis check a ``tier``, and every string field a short fake
rationale. A request with a system prompt containing "judge" and no schema gets the seven principle
scores as JSON. Anything else (a therapist) gets a short reply naming the first words of the last user
message and the model (``therapist_reply``), or ``reply`` when given; it is cut, with finish_reason
"length", past ~4 characters per token of ``max_tokens``. Different texts get different but reproducible answers, so pairs have real gaps and reruns agree.

Recorded answers: ``answers`` names a JSON-lines file of ``{"key": sha256 of the last user message, "reply":
text}``. A request whose last user message has a recorded answer gets that text, whatever its role; one without
gets a 404 naming the key, which a client records as a failed call. A bench then replays a real model's (or a
person's) answers through the whole client: request building, call cache, parsing and combining.

Faults: ``script`` (a comma-separated list of actions for the first requests, in arrival order,
e.g. "500,429,ok") makes tests deterministic; after it, each request draws an action from the
``p_*`` fractions with a seeded RNG. Actions: ok, 500, 429, hang, garble, drop, cut, 400.
``GET /stats`` returns counts of requests and actions taken.

    with fake_server(latency=0.0, script="500,ok") as srv:
        backend = OpenAIBackend(OpenAIBackendConfig(base_urls=[srv.base_url], api_key_env=None))

    python -m psychocounsel.testing.fakeserver --port 8000 --latency 0.05 --p500 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Iterator

from .. import PRINCIPLE_KEYS
from .fake_session_judges import session_judge_reply
from .fake_sessions import session_reply

ACTIONS = ("ok", "500", "429", "hang", "garble", "drop", "cut", "400")


@dataclass
class FakeOptions:
    """Behaviour of one fake server. Fractions are per request and independent of each other."""

    latency: float = 0.05  # 50 ms: the pipeline bench's setting (bound = in_flight / 0.05 req/s)
    reply: str | None = None  # fixed reply text for non-judge requests (None: ``therapist_reply``)
    judge_reply: str | None = None  # fixed reply text for judge requests (None: hashed scores)
    script: str = ""  # forced actions for the first requests, e.g. "500,ok"
    p500: float = 0.0
    p429: float = 0.0
    retry_after: float = 1.0  # seconds sent in Retry-After with every 429
    p_hang: float = 0.0
    p_garble: float = 0.0
    p_drop: float = 0.0
    p_cut: float = 0.0
    chunked: bool = False  # send bodies with Transfer-Encoding: chunked (like some proxies)
    reject_max_tokens: bool = False  # 400 on "max_tokens", as OpenAI's reasoning models do
    seed: int = 0
    certfile: str | None = None  # serve https with this cert (+ keyfile)
    keyfile: str | None = None
    answers: str | None = None  # recorded replies (JSON lines: key = sha256 of the last user message, reply)

    def argv(self) -> list[str]:
        out = []
        for k, v in asdict(self).items():
            if v is None or v is False:
                continue
            flag = "--" + k.replace("_", "-")
            out += [flag] if v is True else [flag, str(v)]
        return out


def judge_scores(text: str) -> dict[str, int]:
    """Reproducible 1-5 scores from a hash of the judged text (so pairs get real gaps)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return {k: 1 + digest[i] % 5 for i, k in enumerate(PRINCIPLE_KEYS)}


def _schema(req: dict) -> dict | None:
    fmt = req.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
    return schema if isinstance(schema, dict) and isinstance(schema.get("properties"), dict) else None


def _hashed(text: str, field: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{field}\x00{text}".encode(), digest_size=4).digest(), "big") % n


def schema_reply(schema: dict, text: str) -> dict:
    """An object that fits a structured-output schema, every value drawn from a hash of ``text``.

    Principle scores keep ``judge_scores``' values, so a run judged through a schema and one judged
    through the plain judge prompt score alike.
    """
    scores = judge_scores(text)
    out: dict = {}
    for name, prop in schema["properties"].items():
        prop = prop if isinstance(prop, dict) else {}
        if name in scores and prop.get("type") == "integer":
            out[name] = scores[name]
        elif prop.get("enum"):
            out[name] = prop["enum"][_hashed(text, name, len(prop["enum"]))]
        elif prop.get("type") == "integer":
            lo, hi = int(prop.get("minimum", 1)), int(prop.get("maximum", 5))
            out[name] = lo + _hashed(text, name, hi - lo + 1)
        elif prop.get("type") == "number":
            out[name] = _hashed(text, name, 1000) / 1000
        elif prop.get("type") == "boolean":
            out[name] = bool(_hashed(text, name, 2))
        else:
            out[name] = f"Fake {name}: derived from a hash of the request."
    return out


def _is_judge(req: dict) -> bool:
    if req.get("response_format"):
        return True
    return any(m.get("role") == "system" and "judge" in str(m.get("content", "")).lower()
               for m in req.get("messages", ()))


def therapist_reply(speech: str, model: str) -> str:
    """A fake therapist's reply: it quotes the speech's first four words (replies differ per speech) and ends
    with the model's name (models differ, so the judge tells them apart). It never pastes the speech back:
    a reply echoing its prompt is refused as invalid (dataset/validate.py), as it would be from a real model."""
    head = " ".join(speech.split()[:4])
    return f'I hear you. When you say "{head}...", it sounds like a lot to carry. What feels hardest now? ({model})'


def answer_key(last_user: str) -> str:
    """The key of a recorded answer: the sha256 of the request's last user message, as sent."""
    return hashlib.sha256(last_user.encode()).hexdigest()


def load_answers(path: str) -> dict[str, str]:
    """Recorded replies by key; a malformed line stops the server with one line naming it."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, reply = row["key"], row["reply"]
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"fakeserver: {path}:{n}: expected {{\"key\": ..., \"reply\": ...}}") from None
            if not isinstance(key, str) or not isinstance(reply, str):
                raise SystemExit(f"fakeserver: {path}:{n}: key and reply must be strings")
            out[key] = reply
    return out


def last_user_message(req: dict) -> str:
    msgs = req.get("messages") or []
    return next((str(m.get("content", "")) for m in reversed(msgs) if m.get("role") == "user"), "")


def make_reply(req: dict, opts: FakeOptions, garble: bool = False) -> tuple[str, str]:
    """The assistant text and finish_reason for a parsed request body."""
    last_user = last_user_message(req)
    scripted = session_judge_reply(req)
    if scripted is None:
        scripted = session_reply(req)
    if scripted is not None:  # a multi-turn session role: client simulator, session therapist or judge
        return (("\x00garbled<<" + scripted[:40]) if garble else scripted), "stop"
    if _is_judge(req):
        schema = _schema(req)
        if opts.judge_reply is not None:
            text = opts.judge_reply
        elif schema is not None:
            text = json.dumps(schema_reply(schema, last_user))
        else:
            verdict = dict(judge_scores(last_user))
            verdict["rationale"] = "Fake judge: scores derived from a hash of the response."
            text = json.dumps(verdict)
        if garble:
            text = "Sure! Here are my scores: " + text[: len(text) // 2]
        return text, "stop"
    if garble:
        return "\x00garbled<<" + last_user[::-1][:40], "stop"
    text = opts.reply if opts.reply is not None else therapist_reply(last_user, str(req.get("model", "")))
    max_tokens = req.get("max_tokens") or req.get("max_completion_tokens") or 10**9
    if len(text) > 4 * max_tokens:  # ~4 chars per token, like the backend's own estimate
        return text[: 4 * max_tokens], "length"
    return text, "stop"


class _Server:
    """Shared state: options, action counter, RNG, stats."""

    def __init__(self, opts: FakeOptions):
        self.opts = opts
        self.script = [a.strip() for a in opts.script.split(",") if a.strip()]
        bad = [a for a in self.script if a not in ACTIONS]
        if bad:
            raise SystemExit(f"fakeserver: unknown script actions {bad}; known: {ACTIONS}")
        self.rng = random.Random(opts.seed)
        self.n = 0
        self.stats: dict[str, int] = {"requests": 0}
        self.last: tuple[str, bytes] = ("", b"")  # head and body of the last chat request
        self.started = time.time()
        self.answers = load_answers(opts.answers) if opts.answers else None

    def next_action(self) -> str:
        i, self.n = self.n, self.n + 1
        if i < len(self.script):
            return self.script[i]
        o, r = self.opts, self.rng.random()
        for action, p in (("500", o.p500), ("429", o.p429), ("hang", o.p_hang),
                          ("garble", o.p_garble), ("drop", o.p_drop), ("cut", o.p_cut)):
            if r < p:
                return action
            r -= p
        return "ok"


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 429: b"Too Many Requests",
            500: b"Internal Server Error"}


class _Conn(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, one request at a time (no pipelining needed)."""

    def __init__(self, server: _Server):
        self.s = server
        self.buf = bytearray()
        self.busy = False
        self.t: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data: bytes):
        self.buf += data
        if not self.busy:
            self._next()

    def connection_lost(self, exc):
        self.t = None

    def _next(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4: end + 4 + length])
        del self.buf[: end + 4 + length]
        self.busy = True
        self._handle(method, target, head, body)

    def _send(self, status: int, body: bytes, extra: bytes = b""):
        if self.t is None:
            return
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n" % (status, _REASONS.get(status, b"X"))
        if self.s.opts.chunked and len(body) > 1:
            half = len(body) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
            self.t.write(head + extra + b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        else:
            self.t.write(head + extra + b"content-length: %d\r\n\r\n" % len(body) + body)
        self.busy = False
        if self.buf:
            self._next()

    def _handle(self, method: str, target: str, head: str, body: bytes):
        s = self.s
        if method == "GET" and target.endswith("/stats"):
            return self._send(200, json.dumps(s.stats).encode())
        if method == "GET" and target.endswith("/last"):
            return self._send(200, json.dumps({"head": s.last[0], "body": s.last[1].decode()}).encode())
        if method != "POST" or not target.endswith("/chat/completions"):
            return self._send(404, b'{"error":{"message":"not found"}}')
        s.stats["requests"] += 1
        s.last = (head, body)
        action = s.next_action()
        s.stats[action] = s.stats.get(action, 0) + 1
        if action == "hang":
            return  # keep the connection open, never answer: the client must time out
        self.loop.call_later(s.opts.latency, self._answer, action, body)

    def _answer(self, action: str, body: bytes):
        if self.t is None:
            return
        if action == "drop":
            self.t.close()
            return
        if action == "500":
            return self._send(500, b'{"error":{"message":"fake internal error","type":"server_error"}}')
        if action == "429":
            return self._send(429, b'{"error":{"message":"fake rate limit","type":"rate_limit"}}',
                              b"retry-after: %s\r\n" % str(self.s.opts.retry_after).encode())
        if action == "400":
            return self._send(400, b'{"error":{"message":"fake bad request","type":"invalid_request_error"}}')
        try:
            req = json.loads(body)
        except ValueError:
            return self._send(400, b'{"error":{"message":"body is not JSON"}}')
        if self.s.opts.reject_max_tokens and "max_tokens" in req:
            return self._send(400, b'{"error":{"message":"Unsupported parameter: \'max_tokens\' is not '
                                   b'supported with this model. Use \'max_completion_tokens\' instead."}}')
        if self.s.answers is not None:
            key = answer_key(last_user_message(req))
            if key not in self.s.answers:
                return self._send(404, json.dumps({"error": {"message": f"no recorded answer for key {key}"}}).encode())
            text, finish = self.s.answers[key], "stop"
        else:
            text, finish = make_reply(req, self.s.opts, garble=action == "garble")
        prompt_chars = sum(len(str(m.get("content", ""))) for m in req.get("messages", ()))
        reply = json.dumps({
            "id": "chatcmpl-fake%d" % self.s.n, "object": "chat.completion", "created": int(self.s.started),
            "model": req.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(text) // 4 + 1,
                      "total_tokens": prompt_chars // 4 + len(text) // 4 + 2},
        }).encode()
        if action == "cut":  # promise the whole body, send half, close: a truncated reply
            head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(reply)
            self.t.write(head + reply[: len(reply) // 2])
            self.t.close()
            return
        self._send(200, reply)


async def serve(opts: FakeOptions, host: str = "127.0.0.1", port: int = 0, ready=None,
                stop_on_sigterm: bool = False) -> None:
    """Serve until cancelled (or SIGTERM); ``ready(port)`` is called once listening."""
    state = _Server(opts)
    ssl_ctx = None
    if opts.certfile:
        import ssl
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(opts.certfile, opts.keyfile)
    loop = asyncio.get_running_loop()
    # backlog 4096: a bench opens 256+ connections at once; the default 100 drops SYNs (1 s stalls)
    srv = await loop.create_server(lambda: _Conn(state), host, port, ssl=ssl_ctx, backlog=4096)
    stop = asyncio.Event()
    if stop_on_sigterm:  # through the loop: a plain signal handler can wait out a whole epoll sleep
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    if ready:
        ready(srv.sockets[0].getsockname()[1])
    async with srv:
        await stop.wait()


@dataclass
class FakeServer:
    """Handle of a running fake server subprocess."""

    port: int
    proc: subprocess.Popen
    scheme: str = "http"
    host: str = "127.0.0.1"
    opts: FakeOptions = field(default_factory=FakeOptions)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/v1"

    def _get(self, what: str) -> dict:
        with urllib.request.urlopen(f"http://{self.host}:{self.port}/v1/{what}", timeout=5) as r:
            return json.loads(r.read())

    def stats(self) -> dict[str, int]:
        """Counts of requests and of each action taken so far (plain http only)."""
        return self._get("stats")

    def last_request(self) -> tuple[str, dict]:
        """Head (request line + headers) and parsed JSON body of the last chat request."""
        last = self._get("last")
        return last["head"], json.loads(last["body"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


def start_fake_server(opts: FakeOptions | None = None, **kw) -> FakeServer:
    """Start a fake server on a free localhost port in a subprocess (call ``.stop()``)."""
    opts = opts or FakeOptions(**kw)
    cmd = [sys.executable, "-m", "psychocounsel.testing.fakeserver", "--port", "0", *opts.argv()]
    # The child must import this very package, even from a checkout that is not pip-installed.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    # stderr goes to a file, not a pipe: a chatty server must never block on a full pipe.
    err = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        err.seek(0)
        raise RuntimeError(f"fake server failed to start: {line}{err.read()[-2000:]}")
    err.close()  # the child keeps its own descriptor
    return FakeServer(int(line.split()[1]), proc, "https" if opts.certfile else "http", opts=opts)


@contextlib.contextmanager
def fake_server(opts: FakeOptions | None = None, **kw) -> Iterator[FakeServer]:
    """Context manager: a fake server subprocess on a free port, stopped on exit."""
    srv = start_fake_server(opts, **kw)
    try:
        yield srv
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    for name, value in asdict(FakeOptions()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            ap.add_argument(flag, action="store_true")
        elif isinstance(value, float):
            ap.add_argument(flag, type=float, default=value)
        elif isinstance(value, int):
            ap.add_argument(flag, type=int, default=value)
        else:
            ap.add_argument(flag, default=value)
    a = vars(ap.parse_args(argv))
    host, port = a.pop("host"), a.pop("port")
    opts = FakeOptions(**a)
    try:
        import uvloop  # optional: cuts the server's CPU per request
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
        r.run(serve(opts, host, port, ready=lambda p: print(f"LISTENING {p}", flush=True),
                    stop_on_sigterm=True))


if __name__ == "__main__":
    main()
