"""A minimal OpenAI-compatible chat-completions client (stdlib ``urllib`` only).

Works against vLLM, llama.cpp server, Ollama's ``/v1``, hosted services and ``poisonjax serve``.

* ``POST {endpoint}/chat/completions`` with ``model``, ``messages=[{"role": "user", ...}]``, ``n``,
  ``temperature``, ``max_tokens``, ``seed``; returns the ``n`` choices' message contents.
* Timeouts on every request (``timeout`` seconds); at most ``max_retries`` (3) retries with
  exponential backoff (``backoff * 2**attempt``, or the server's ``Retry-After``) on 429, 5xx,
  timeouts and dropped connections; no retry on any other 4xx.
* A response that is not JSON, or JSON without ``choices[i].message.content``, raises
  :class:`MalformedResponseError` (a clear message, never a ``KeyError``).
* The API key comes from the environment variable named by ``api_key_env`` (``Authorization:
  Bearer``); it is never logged, never put in an exception message or a report (:meth:`__repr__`
  hides it too).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import List, Optional

from poisonjax.core.validation import PoisonJaxInputError

log = logging.getLogger(__name__)
RETRY_STATUS = (429, 500, 502, 503, 504)


class ChatClientError(RuntimeError):
    """The endpoint failed after the allowed retries (or with a non-retryable status)."""


class MalformedResponseError(ChatClientError):
    """The endpoint answered with something that is not an OpenAI chat-completions JSON."""


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` must be an ``http(s)://host[:port][/path]`` URL; returns it without a trailing ``/``."""
    u = urllib.parse.urlparse(str(endpoint or ""))
    if u.scheme not in ("http", "https") or not u.netloc:
        raise PoisonJaxInputError(f"endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got {endpoint!r}")
    return str(endpoint).rstrip("/")


class ChatClient:
    """Client for one OpenAI-compatible endpoint (module doc)."""

    def __init__(self, endpoint: str, *, api_key_env: Optional[str] = None, timeout: float = 30.0,
                 max_retries: int = 3, backoff: float = 0.5):
        self.endpoint = check_endpoint(endpoint)
        self.api_key_env = api_key_env
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise PoisonJaxInputError(f"api_key_env: environment variable {api_key_env!r} is not set (the endpoint's API key)")
        self.timeout, self.max_retries, self.backoff = float(timeout), min(int(max_retries), 3), float(backoff)
        self.attempts = 0          # HTTP requests sent (for tests and reports)

    def __repr__(self):
        return f"ChatClient(endpoint={self.endpoint!r}, api_key_env={self.api_key_env!r})"

    def _headers(self):
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            h["Authorization"] = "Bearer " + os.environ.get(self.api_key_env, "")
        return h

    def _request(self, method: str, path: str, body: Optional[dict]) -> dict:
        url = self.endpoint + path
        data = None if body is None else json.dumps(body).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            self.attempts += 1
            req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise MalformedResponseError(
                        f"{method} {url}: the response is not JSON (first bytes: {raw[:60]!r}); is this an "
                        "OpenAI-compatible endpoint?") from None
            except urllib.error.HTTPError as e:
                msg = _error_message(e)
                if e.code == 401 or e.code == 403:
                    raise PoisonJaxInputError(
                        f"api_key_env: the endpoint refused the request ({e.code}: {msg}); set the API key in the "
                        f"environment variable named by api_key_env (now {self.api_key_env!r})") from None
                if e.code == 404 and body is not None and "model" in msg.lower():
                    raise PoisonJaxInputError(f"model: {msg}") from None
                if e.code not in RETRY_STATUS:
                    raise ChatClientError(f"{method} {url}: HTTP {e.code}: {msg} (not retried)") from None
                last = f"HTTP {e.code}: {msg}"
                retry_after = e.headers.get("Retry-After") if e.headers else None
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
            if attempt < self.max_retries:
                try:
                    wait = float(retry_after) if retry_after is not None else self.backoff * 2 ** attempt
                except ValueError:
                    wait = self.backoff * 2 ** attempt
                log.info("%s %s failed (%s); retry %d/%d in %.2fs", method, url, last, attempt + 1, self.max_retries, wait)
                time.sleep(min(wait, 30.0))
        raise ChatClientError(f"{method} {url}: failed after {self.max_retries} retries; last error: {last}")

    def list_models(self) -> List[str]:
        """``GET {endpoint}/models`` -> model ids."""
        out = self._request("GET", "/models", None)
        try:
            return [m["id"] for m in out["data"]]
        except (KeyError, TypeError):
            raise MalformedResponseError(f"GET {self.endpoint}/models: expected {{'data': [{{'id': ...}}]}}, got {str(out)[:80]}") from None

    def chat(self, model: str, prompt: str, *, n: int = 1, temperature: float = 1.0, max_tokens: int = 32,
             seed: Optional[int] = None) -> List[str]:
        """``n`` sampled completions (message contents) of one user ``prompt``."""
        if not model:
            raise PoisonJaxInputError("model must be a non-empty model name")
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "n": int(n),
                "temperature": float(temperature), "max_tokens": int(max_tokens)}
        if seed is not None:
            body["seed"] = int(seed)
        out = self._request("POST", "/chat/completions", body)
        try:
            texts = [c["message"]["content"] for c in out["choices"]]
        except (KeyError, TypeError, IndexError):
            raise MalformedResponseError(
                f"POST {self.endpoint}/chat/completions: expected choices[i].message.content in the JSON, got {str(out)[:80]}") from None
        if len(texts) != n:
            raise MalformedResponseError(f"asked for n={n} choices, the endpoint returned {len(texts)}")
        return [str(t) for t in texts]


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read().decode("utf-8"))
        return str(body.get("error", {}).get("message", body))[:200]
    except Exception:  # noqa: BLE001 -- any unreadable error body
        return str(e.reason)[:200]
