"""``poisonjax serve``: local tiny LMs behind an OpenAI-compatible ``/v1/chat/completions`` (loopback).

* ``POST /v1/chat/completions`` -- ``model`` (one of the served names), ``messages`` (the last user
  message is the prompt), ``n``, ``temperature`` (> 0), ``max_tokens`` (answer words kept),
  ``seed`` (sampling key ``PRNGKey(seed)``, the same key the local backend uses for that request, so
  both give the same samples). Unknown model -> 404; a bad field -> 400; a missing/wrong API key
  (when the server was started with ``api_key_env``) -> 401.
* ``GET /v1/models`` -- the served names.
* A *judge* model (optional) answers the :class:`~poisonjax.llm.entailment.HTTPJudge` prompt
  ``"premise: A hypothesis: B entails ?"`` with ``yes``/``no`` drawn with probability
  ``P(A => B)`` of a local judge (so the HTTP judge can be exercised offline).

Built on ``http.server.ThreadingHTTPServer``; one lock serialises model calls.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional

import numpy as np

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.llm.corpus import BOS, SEP

_JUDGE_RE = re.compile(r"^premise: (.*) hypothesis: (.*) entails \?$")


class _BadRequest(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def complete(models, vocab, model_name: str, prompt: str, n: int, temperature: float, max_tokens: int,
             seed: int, judges: Optional[Dict[str, object]] = None):
    """The ``n`` completions of ``prompt`` by ``model_name`` (pure function of its arguments)."""
    import jax.numpy as jnp
    from poisonjax.llm.sampling import PromptGrid, answer_texts, check_sampling_args, sample_answers
    judges = judges or {}
    if model_name in judges:
        m = _JUDGE_RE.match(prompt.strip())
        if not m:
            raise _BadRequest(400, "judge models answer 'premise: A hypothesis: B entails ?' prompts only")
        p = float(judges[model_name].entails([m.group(1)], [m.group(2)])[0])
        rng = np.random.RandomState(int(seed) % 2 ** 32)
        return ["yes" if u < p else "no" for u in rng.rand(n)]
    if model_name not in models:
        raise _BadRequest(404, f"model {model_name!r} is not served here; available: {sorted(models) + sorted(judges)}")
    try:
        check_sampling_args(n, temperature)
    except PoisonJaxInputError as e:
        raise _BadRequest(400, str(e))
    model, params = models[model_name]
    try:
        ids = [BOS] + vocab.encode(prompt) + [SEP]
    except KeyError as e:
        raise _BadRequest(400, f"prompt: {e.args[0]}")
    L = model.max_len
    if len(ids) >= L:
        raise _BadRequest(400, f"prompt: {len(ids)} tokens leave no room in the model's {L}-token context")
    row = np.zeros((1, L), np.int32)
    row[0, :len(ids)] = ids
    grid = PromptGrid([prompt], np.zeros(1, int), np.zeros(1, int), row, np.asarray([len(ids)], np.int32))
    toks = sample_answers(model, params, grid, n, temperature, np.asarray([seed], np.uint32))
    return [" ".join(t.split()[:max_tokens]) for t in answer_texts(toks, grid, vocab)[0]]


def make_server(models, vocab, *, host: str = "127.0.0.1", port: int = 0, api_key_env: Optional[str] = None,
                judges: Optional[Dict[str, object]] = None) -> ThreadingHTTPServer:
    """A server (not started; call ``serve_forever``) for ``models`` (``name -> (module, params)``)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise PoisonJaxInputError(f"host must be a loopback address (127.0.0.1, localhost, ::1), got {host!r}")
    lock = threading.Lock()
    judges = judges or {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):      # quiet; never logs headers (the API key)
            pass

        def _send(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _auth_ok(self):
            if not api_key_env:
                return True
            return self.headers.get("Authorization", "") == "Bearer " + os.environ.get(api_key_env, "\0")

        def do_GET(self):
            if not self._auth_ok():
                return self._send(401, {"error": {"message": "missing or wrong API key"}})
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": k, "object": "model"}
                                                                   for k in sorted(models) + sorted(judges)]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if not self._auth_ok():
                return self._send(401, {"error": {"message": "missing or wrong API key"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                msgs = [m for m in body["messages"] if m.get("role") == "user"]
                if not msgs:
                    raise _BadRequest(400, "messages: no user message")
                n = int(body.get("n", 1))
                temperature = float(body.get("temperature", 1.0))
                max_tokens = int(body.get("max_tokens", 32))
                seed = int(body.get("seed", 0))
                with lock:
                    texts = complete(models, vocab, str(body.get("model", "")), str(msgs[-1]["content"]), n,
                                     temperature, max_tokens, seed, judges)
            except _BadRequest as e:
                return self._send(e.code, {"error": {"message": str(e)}})
            except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
                return self._send(400, {"error": {"message": f"bad request body: {type(e).__name__}: {e}"}})
            self._send(200, {"id": f"chatcmpl-{seed}", "object": "chat.completion", "created": int(time.time()),
                             "model": body["model"],
                             "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                                          "finish_reason": "stop"} for i, t in enumerate(texts)]})

    return ThreadingHTTPServer((host, int(port)), Handler)


def serve(models_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key_env: Optional[str] = None) -> int:
    """``poisonjax serve``: load the models a ``poisonjax run raven`` saved under ``models_dir`` and serve them."""
    from poisonjax.llm.panel import load_models
    models, vocab, _ = load_models(models_dir)
    srv = make_server(models, vocab, host=host, port=port, api_key_env=api_key_env)
    print(f"poisonjax serve: {len(models)} models on http://{host}:{srv.server_address[1]}/v1 "
          f"({', '.join(sorted(models)[:6])}{' ...' if len(models) > 6 else ''})", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


def add_serve_parser(sub):
    """Wire ``poisonjax serve`` into the CLI's sub-parsers; returns the parser."""
    s = sub.add_parser("serve", help="serve trained tiny LMs behind an OpenAI-compatible /v1/chat/completions on loopback")
    s.add_argument("--models", required=True, help="folder with models.json (a raven run's <workdir>/models)")
    s.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    s.add_argument("--api-key-env", default=None, help="require 'Authorization: Bearer $VAR' (name of the variable)")
    return s


def cmd_serve(args, extra) -> int:
    """CLI entry point of ``poisonjax serve``."""
    if extra:
        raise PoisonJaxInputError(f"serve: unrecognised arguments {extra}")
    return serve(args.models, args.host, args.port, args.api_key_env)
