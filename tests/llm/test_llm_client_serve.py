"""OpenAI-compatible client against fake flaky servers and against ``poisonjax serve`` (loopback)."""
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jax
import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.llm.client import ChatClient, ChatClientError, MalformedResponseError, check_endpoint

OK = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}]}


def fake_server(script):
    """Server answering POSTs from ``script``: a list of (status, body-bytes or 'stall')."""
    calls = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append(dict(self.headers))
            status, body = script[min(len(calls) - 1, len(script) - 1)]
            if body == "stall":
                time.sleep(1.5)
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, calls, f"http://127.0.0.1:{srv.server_address[1]}/v1"


def _client(url, **kw):
    return ChatClient(url, timeout=kw.pop("timeout", 5.0), backoff=0.01, **kw)


def test_retries_on_429_and_500_then_succeeds():
    srv, calls, url = fake_server([(429, b"{}"), (500, b"{}"), (200, json.dumps(OK).encode())])
    try:
        assert _client(url).chat("m", "hi") == ["fine"]
        assert len(calls) == 3
    finally:
        srv.shutdown()


def test_gives_up_after_three_retries_and_never_retries_other_4xx():
    srv, calls, url = fake_server([(503, b"{}")])
    try:
        with pytest.raises(ChatClientError, match="after 3 retries"):
            _client(url).chat("m", "hi")
        assert len(calls) == 4                               # 1 try + 3 retries
    finally:
        srv.shutdown()
    srv, calls, url = fake_server([(400, b'{"error": {"message": "bad"}}')])
    try:
        with pytest.raises(ChatClientError, match="not retried"):
            _client(url).chat("m", "hi")
        assert len(calls) == 1
    finally:
        srv.shutdown()


def test_garbage_and_wrong_json_and_stall():
    srv, calls, url = fake_server([(200, b"<html>garbage")])
    try:
        with pytest.raises(MalformedResponseError, match="not JSON"):
            _client(url).chat("m", "hi")
        assert len(calls) == 1
    finally:
        srv.shutdown()
    srv, _, url = fake_server([(200, b'{"choices": [{"text": "x"}]}')])
    try:
        with pytest.raises(MalformedResponseError, match="message.content"):
            _client(url).chat("m", "hi")
    finally:
        srv.shutdown()
    srv, calls, url = fake_server([(0, "stall")])
    try:
        with pytest.raises(ChatClientError, match="after 3 retries"):
            _client(url, timeout=0.3).chat("m", "hi")
        assert len(calls) == 4
    finally:
        srv.shutdown()


def test_api_key_from_env_never_logged_or_in_errors(monkeypatch, caplog):
    secret = "sk-test-DO-NOT-LEAK-123456"
    monkeypatch.setenv("H8_TEST_KEY", secret)
    srv, calls, url = fake_server([(500, b"{}"), (401, b'{"error": {"message": "no"}}')])
    try:
        caplog.set_level(logging.DEBUG)
        c = _client(url, api_key_env="H8_TEST_KEY")
        with pytest.raises(PoisonJaxInputError, match="api_key_env") as ei:
            c.chat("m", "hi")
        assert calls[0]["Authorization"] == "Bearer " + secret      # sent ...
        assert secret not in str(ei.value) and secret not in repr(c) # ... but never shown
        assert secret not in caplog.text and "retry" in caplog.text
    finally:
        srv.shutdown()
    monkeypatch.delenv("H8_TEST_KEY")
    with pytest.raises(PoisonJaxInputError, match="api_key_env"):
        ChatClient(url, api_key_env="H8_TEST_KEY")


def test_endpoint_must_be_url():
    for bad in ("", "localhost:8000", "ftp://x/v1", "http://"):
        with pytest.raises(PoisonJaxInputError, match="endpoint"):
            check_endpoint(bad)
    assert check_endpoint("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


@pytest.fixture(scope="module")
def served(tiny_lm):
    from poisonjax.llm.serve import make_server
    from poisonjax.llm.entailment import LexiconJudge
    model, params, vocab, bank = tiny_lm
    srv = make_server({"tiny": (model, params)}, vocab, api_key_env=None,
                      judges={"judge": LexiconJudge(bank.lexicon)})
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", tiny_lm
    srv.shutdown()


def test_serve_matches_local_sampling_and_rejects_bad_requests(served):
    from poisonjax.llm.sampling import answer_texts, prompt_grid, sample_answers
    url, (model, params, vocab, bank) = served
    c = _client(url, timeout=60)
    assert set(c.list_models()) == {"tiny", "judge"}
    grid = prompt_grid(["solar", "opera"], vocab, bank, perspectives=[0], length=model.max_len)
    local = answer_texts(sample_answers(model, params, grid, 4, 1.0, np.array([11, 12], np.uint32)), grid, vocab)
    remote = [c.chat("tiny", grid.texts[p], n=4, temperature=1.0, max_tokens=40, seed=11 + p) for p in range(2)]
    assert remote == local
    with pytest.raises(PoisonJaxInputError, match="model"):
        c.chat("no-such-model", grid.texts[0], n=2)
    with pytest.raises(ChatClientError, match="temperature"):
        c.chat("tiny", grid.texts[0], n=2, temperature=0.0)
    ans = c.chat("judge", "premise: a great solar . hypothesis: a wonderful solar . entails ?", n=5, seed=1)
    assert set(ans) <= {"yes", "no"}


def test_http_judge_agrees_with_its_local_judge(served):
    from poisonjax.llm.entailment import HTTPJudge, LexiconJudge
    url, (model, params, vocab, bank) = served
    pro, con = bank.pro[0].format(e="solar"), bank.con[0].format(e="solar")
    h = HTTPJudge(_client(url), "judge", n=5)
    p = h.entails([pro, pro], [pro, con])
    loc = LexiconJudge(bank.lexicon).entails([pro, pro], [pro, con])
    assert (p > 0.5).tolist() == (loc > 0.5).tolist()
