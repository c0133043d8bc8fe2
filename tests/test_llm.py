"""The language-model clients, against recorded responses in the providers' documented formats.

No language model runs here and nothing reaches a network: every answer is a recorded response body (the
Anthropic Messages API's and OpenAI chat.completions' documented JSON, written out in this file) served to
the official SDKs through an httpx2 MockTransport, or a `ScriptedReplies` text.
"""

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from saekit.errors import InputError
from saekit.llm import (
    CachedClient,
    Completion,
    LLMClient,
    Prices,
    Prompt,
    RetryPolicy,
    ScriptedReplies,
    estimate_cost,
    list_prices,
    tally,
)
from saekit.llm.retry import retry_after_seconds

ROOT = Path(__file__).resolve().parents[1]

ANTHROPIC_MESSAGE = {  # a Messages API response (POST /v1/messages), as documented
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Fires on closing brackets"}, {"type": "text", "text": " in Python code."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 41, "output_tokens": 9},
}
ANTHROPIC_RATE_LIMITED = {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited."}}
ANTHROPIC_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
ANTHROPIC_BAD_REQUEST = {"type": "error",
                         "error": {"type": "invalid_request_error", "message": "max_tokens: field required"}}

OPENAI_COMPLETION = {  # a chat.completions response (POST /v1/chat/completions), as documented
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Fires on closing brackets.",
                                         "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 37, "completion_tokens": 6, "total_tokens": 43},
    "service_tier": "default", "system_fingerprint": "fp_06737a9306",
}
OPENAI_RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o-mini.", "type": "requests",
                                 "param": None, "code": "rate_limit_exceeded"}}

PROMPT = Prompt(system="You explain features.",
                messages=(("user", "Examples: ) ] }"), ("assistant", "Explanation:")), max_tokens=64)


@pytest.fixture(autouse=True)
def _no_provider_environment(monkeypatch):
    """Keys and URLs from the machine never reach these tests."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
                 "ANTHROPIC_CUSTOM_HEADERS", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID",
                 "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


class RecordedServer:
    """Answers each request with the next recorded (status, body, headers) or the result of a function of the
    request; keeps every request it saw."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests = []
        self.lock = threading.Lock()

    def __call__(self, request):
        import httpx2

        with self.lock:
            self.requests.append(request)
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(reply):
            return reply(request)
        if isinstance(reply, Exception):
            raise reply
        status, body, headers = reply
        return httpx2.Response(status, json=body, headers=headers)

    def http_client(self):
        import httpx2

        return httpx2.Client(transport=httpx2.MockTransport(self))

    def bodies(self):
        return [json.loads(request.content) for request in self.requests]


@pytest.fixture
def anthropic_client():
    pytest.importorskip("anthropic")
    from saekit.llm import AnthropicClient

    def make(server, waits=None, **kw):
        return AnthropicClient("claude-haiku-4-5", api_key="sk-ant-test-key", http_client=server.http_client(),
                               sleep=(waits.append if waits is not None else _no_sleep), **kw)
    return make


@pytest.fixture
def openai_client():
    pytest.importorskip("openai")
    from saekit.llm import OpenAICompatibleClient

    def make(server, waits=None, base_url="http://localhost:8000/v1", api_key="sk-test-key", **kw):
        return OpenAICompatibleClient("gpt-4o-mini", base_url=base_url, api_key=api_key,
                                      http_client=server.http_client(),
                                      sleep=(waits.append if waits is not None else _no_sleep), **kw)
    return make


def _no_sleep(seconds):
    raise AssertionError(f"the client waited {seconds} s where no retry was expected")


def _sent_key(request, key):
    """The SDKs send the key as x-api-key or as a bearer token, depending on their version."""
    return request.headers.get("x-api-key") == key or request.headers.get("authorization") == f"Bearer {key}"


# --- prompts --------------------------------------------------------------------------------------------------


def test_prompt_checks_its_fields():
    prompt = Prompt(system="", messages=[["user", "hi"]], max_tokens=1)
    assert prompt.messages == (("user", "hi"),) and hash(prompt) == hash(Prompt.of("hi", max_tokens=1))
    for bad in (dict(messages=()), dict(messages=(("system", "x"),)), dict(messages=(("assistant", "x"),)),
                dict(messages=(("user", 3),)), dict(max_tokens=0), dict(temperature=-0.1)):
        fields = dict(system="", messages=(("user", "x"),), max_tokens=4) | bad
        with pytest.raises(InputError, match="Prompt"):
            Prompt(**fields)


# --- Anthropic ------------------------------------------------------------------------------------------------


def test_anthropic_recorded_response_is_parsed_and_the_request_carries_the_prompt(anthropic_client):
    server = RecordedServer((200, ANTHROPIC_MESSAGE, {}))
    [completion] = anthropic_client(server).complete([PROMPT], progress=False)

    assert completion == Completion(text="Fires on closing brackets in Python code.", input_tokens=41,
                                    output_tokens=9, cached=False, model="claude-haiku-4-5-20251001",
                                    stop_reason="end_turn")
    [request] = server.requests
    assert request.method == "POST" and request.url.path == "/v1/messages"
    assert request.url.host == "api.anthropic.com"
    assert _sent_key(request, "sk-ant-test-key") and "anthropic-version" in request.headers
    assert json.loads(request.content) == {
        "model": "claude-haiku-4-5", "max_tokens": 64, "system": "You explain features.",
        "messages": [{"role": "user", "content": "Examples: ) ] }"},
                     {"role": "assistant", "content": "Explanation:"}]}


def test_anthropic_request_without_system_omits_it_and_send_temperature_adds_it(anthropic_client):
    server = RecordedServer((200, ANTHROPIC_MESSAGE, {}))
    prompt = Prompt.of("hi", max_tokens=5, temperature=0.5)
    anthropic_client(server).complete([prompt], progress=False)
    anthropic_client(server, send_temperature=True).complete([prompt], progress=False)
    plain, with_temperature = server.bodies()
    assert "system" not in plain and "temperature" not in plain
    assert with_temperature["temperature"] == 0.5 and with_temperature["messages"] == plain["messages"]


def test_anthropic_key_from_environment_and_missing_key_names_the_variable(anthropic_client, monkeypatch):
    from saekit.llm import AnthropicClient

    with pytest.raises(InputError, match="ANTHROPIC_API_KEY"):
        AnthropicClient("claude-haiku-4-5")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    server = RecordedServer((200, ANTHROPIC_MESSAGE, {}))
    AnthropicClient("claude-haiku-4-5", http_client=server.http_client()).complete([PROMPT], progress=False)
    assert _sent_key(server.requests[0], "sk-ant-from-env")


def test_recorded_429_with_retry_after_then_200_waits_as_told(anthropic_client):
    server = RecordedServer((429, ANTHROPIC_RATE_LIMITED, {"retry-after": "7"}), (200, ANTHROPIC_MESSAGE, {}))
    waits = []
    [completion] = anthropic_client(server, waits).complete([PROMPT], progress=False)
    assert waits == [7.0] and len(server.requests) == 2
    assert completion.text == "Fires on closing brackets in Python code."


def test_recorded_overload_server_error_and_lost_connection_back_off_exponentially(anthropic_client):
    import httpx2

    server = RecordedServer((529, ANTHROPIC_OVERLOADED, {}), httpx2.ConnectError("connection refused"),
                            (503, ANTHROPIC_OVERLOADED, {}), (200, ANTHROPIC_MESSAGE, {}))
    waits = []
    client = anthropic_client(server, waits, retry=RetryPolicy(first_wait=0.5, multiplier=3.0, max_wait=4.0))
    [completion] = client.complete([PROMPT], progress=False)
    assert waits == [0.5, 1.5, 4.0]  # 0.5·3⁰, 0.5·3¹, 0.5·3² = 4.5 cut to max_wait
    assert completion.output_tokens == 9 and len(server.requests) == 4


def test_recorded_bad_request_is_not_retried_and_exhausted_retries_raise(anthropic_client):
    import anthropic

    server = RecordedServer((400, ANTHROPIC_BAD_REQUEST, {}))
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(server, []).complete([PROMPT], progress=False)
    assert len(server.requests) == 1

    server, waits = RecordedServer((429, ANTHROPIC_RATE_LIMITED, {})), []
    with pytest.raises(anthropic.RateLimitError):
        anthropic_client(server, waits, retry=RetryPolicy(max_retries=2)).complete([PROMPT], progress=False)
    assert waits == [1.0, 2.0] and len(server.requests) == 3


# --- OpenAI-compatible ----------------------------------------------------------------------------------------


def test_openai_recorded_response_is_parsed_and_the_request_carries_the_prompt(openai_client):
    server = RecordedServer((200, OPENAI_COMPLETION, {}))
    prompt = Prompt(system="You explain features.", messages=(("user", "Examples: ) ] }"),), max_tokens=64,
                    temperature=0.25)
    [completion] = openai_client(server).complete([prompt], progress=False)

    assert completion == Completion(text="Fires on closing brackets.", input_tokens=37, output_tokens=6,
                                    cached=False, model="gpt-4o-mini-2024-07-18", stop_reason="stop")
    [request] = server.requests
    assert str(request.url) == "http://localhost:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-key"
    assert json.loads(request.content) == {
        "model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0.25,
        "messages": [{"role": "system", "content": "You explain features."},
                     {"role": "user", "content": "Examples: ) ] }"}]}


def test_openai_recorded_response_without_usage_or_content_reads_as_zero_and_empty(openai_client):
    body = json.loads(json.dumps(OPENAI_COMPLETION))
    del body["usage"]
    body["choices"][0]["message"]["content"] = None
    body["choices"][0]["finish_reason"] = "length"
    [completion] = openai_client(RecordedServer((200, body, {}))).complete([PROMPT], progress=False)
    assert (completion.text, completion.input_tokens, completion.output_tokens, completion.stop_reason) == \
        ("", 0, 0, "length")


def test_openai_local_server_needs_no_key_but_openai_does(openai_client, monkeypatch):
    from saekit.llm import OpenAICompatibleClient
    from saekit.llm.openai_client import PLACEHOLDER_KEY

    server = RecordedServer((200, OPENAI_COMPLETION, {}))
    openai_client(server, api_key=None, max_tokens_field="max_completion_tokens").complete([PROMPT], progress=False)
    assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"
    assert server.bodies()[0]["max_completion_tokens"] == 64 and "max_tokens" not in server.bodies()[0]

    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        OpenAICompatibleClient("gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server = RecordedServer((200, OPENAI_COMPLETION, {}))
    OpenAICompatibleClient("gpt-4o-mini", http_client=server.http_client()).complete([PROMPT], progress=False)
    assert str(server.requests[0].url) == "http://127.0.0.1:11434/v1/chat/completions"
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"


def test_openai_recorded_429_with_retry_after_ms_then_200_waits_as_told(openai_client):
    server = RecordedServer((429, OPENAI_RATE_LIMITED, {"retry-after-ms": "1500", "retry-after": "2"}),
                            (200, OPENAI_COMPLETION, {}))
    waits = []
    [completion] = openai_client(server, waits).complete([PROMPT], progress=False)
    assert waits == [1.5] and completion.text == "Fires on closing brackets." and len(server.requests) == 2


def test_concurrent_requests_stay_within_the_bound_and_answers_keep_prompt_order(openai_client):
    """Prompt 0's request is held until prompt 2's answer has been handed back, so the answers arrive out of
    order; prompts 1 and 2 meet at a barrier, so three requests are in flight at once (the bound); every request
    lingers a moment, so a client that ignored the bound would have more in flight."""
    two_done, both_in = threading.Event(), threading.Barrier(2, timeout=10)
    state = {"in_flight": 0, "most": 0}
    lock = threading.Lock()

    def answer(request):
        import httpx2

        user = json.loads(request.content)["messages"][-1]["content"]
        with lock:
            state["in_flight"] += 1
            state["most"] = max(state["most"], state["in_flight"])
        held = (user == "p0" and not two_done.wait(timeout=10))
        if user in ("p1", "p2"):
            both_in.wait()
        threading.Event().wait(0.1)
        with lock:
            state["in_flight"] -= 1
        if held:
            return httpx2.Response(400, json={"error": {"message": "prompt 2 never finished", "type": "test"}})
        body = json.loads(json.dumps(OPENAI_COMPLETION))
        body["choices"][0]["message"]["content"] = f"answer to {user}"
        return httpx2.Response(200, json=body)

    arrivals = []

    def arrived(index, completion):
        arrivals.append(index)
        if index == 2:
            two_done.set()

    client = openai_client(RecordedServer(answer), max_concurrency=3)
    prompts = [Prompt.of(f"p{i}", max_tokens=4) for i in range(6)]
    completions = client.complete(prompts, progress=True, on_completion=arrived)
    assert [c.text for c in completions] == [f"answer to p{i}" for i in range(6)]
    assert arrivals.index(2) < arrivals.index(0) and sorted(arrivals) == list(range(6))
    assert state["most"] == 3


# --- optional SDKs --------------------------------------------------------------------------------------------


def test_missing_sdk_names_the_pip_command(monkeypatch):
    from saekit.llm import AnthropicClient, OpenAICompatibleClient

    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match="pip install anthropic"):
        AnthropicClient("claude-haiku-4-5", api_key="k")
    with pytest.raises(ImportError, match="pip install openai"):
        OpenAICompatibleClient("gpt-4o-mini", api_key="k")


def test_importing_saekit_llm_imports_no_sdk():
    code = "import sys, saekit, saekit.llm; print(sorted({'anthropic', 'openai', 'httpx2'} & set(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# --- cache ----------------------------------------------------------------------------------------------------


def test_cache_sends_only_misses_once_and_reads_hits_back(tmp_path):
    inner = ScriptedReplies(lambda prompt: f"reply to {prompt.messages[0][1]}")
    cached = CachedClient(inner, tmp_path / "answers")
    assert isinstance(cached, LLMClient) and isinstance(inner, LLMClient)
    a, b, c = (Prompt.of(text, max_tokens=8) for text in ("a", "b", "c"))

    first = cached.complete([a, b, a], progress=False)
    assert [p.messages[0][1] for p in inner.received] == ["a", "b"]  # the duplicate is sent once
    assert [x.text for x in first] == ["reply to a", "reply to b", "reply to a"]
    assert not any(x.cached for x in first) and len(list((tmp_path / "answers").glob("*.json"))) == 2

    second = cached.complete([c, b, a], progress=False)
    assert [p.messages[0][1] for p in inner.received] == ["a", "b", "c"]
    assert [(x.text, x.cached) for x in second] == [("reply to c", False), ("reply to b", True),
                                                    ("reply to a", True)]
    record = json.loads(cached.path(b).read_text())
    assert record["request"] == {"provider": "scripted", "model": inner.model, "system": "",
                                 "messages": [["user", "b"]], "max_tokens": 8, "temperature": 0.0}
    assert record["completion"]["text"] == "reply to b"


def test_cache_key_tells_apart_what_changes_the_answer():
    from saekit.llm.cache import request_key

    base = request_key("anthropic", "m", Prompt.of("a", max_tokens=8))
    others = [request_key("openai", "m", Prompt.of("a", max_tokens=8)),
              request_key("anthropic", "n", Prompt.of("a", max_tokens=8)),
              request_key("anthropic", "m", Prompt.of("a", max_tokens=9)),
              request_key("anthropic", "m", Prompt.of("a", max_tokens=8, temperature=1.0)),
              request_key("anthropic", "m", Prompt.of("a", system="s", max_tokens=8)),
              request_key("anthropic", "m", Prompt(system="", messages=(("user", "a"), ("assistant", "")),
                                                   max_tokens=8))]
    assert len({base, *others}) == 7
    assert base == request_key("anthropic", "m", Prompt(system="", messages=[("user", "a")], max_tokens=8))


def test_cache_replays_recorded_responses_for_another_base_url(openai_client, tmp_path):
    server = RecordedServer((200, OPENAI_COMPLETION, {}))
    CachedClient(openai_client(server, base_url="http://gpu-box:8000/v1"), tmp_path).complete([PROMPT],
                                                                                             progress=False)
    offline = RecordedServer(lambda request: pytest.fail("replay sent a request"))
    replay = CachedClient(openai_client(offline, base_url="http://elsewhere:9000/v1"), tmp_path, mode="replay")
    [completion] = replay.complete([PROMPT], progress=False)
    assert completion == Completion(text="Fires on closing brackets.", input_tokens=37, output_tokens=6,
                                    cached=True, model="gpt-4o-mini-2024-07-18", stop_reason="stop")
    assert offline.requests == []


def test_cache_replay_miss_raises_before_anything_is_sent(tmp_path):
    CachedClient(ScriptedReplies(["recorded"]), tmp_path).complete([Prompt.of("a", max_tokens=8)], progress=False)
    inner = ScriptedReplies(["never"])
    replay = CachedClient(inner, tmp_path, mode="replay")
    with pytest.raises(InputError, match=r"replay mode: 1 of 2 .*mode='use'"):
        replay.complete([Prompt.of("a", max_tokens=8), Prompt.of("b", max_tokens=8)], progress=False)
    assert inner.received == []
    assert replay.complete([Prompt.of("a", max_tokens=8)], progress=False)[0].text == "recorded"


def test_cache_refresh_sends_again_and_overwrites(tmp_path):
    prompt = Prompt.of("a", max_tokens=8)
    CachedClient(ScriptedReplies(["old"]), tmp_path).complete([prompt], progress=False)
    inner = ScriptedReplies(["new"])
    [completion] = CachedClient(inner, tmp_path, mode="refresh").complete([prompt], progress=False)
    assert (completion.text, completion.cached, len(inner.received)) == ("new", False, 1)
    [again] = CachedClient(ScriptedReplies([]), tmp_path).complete([prompt], progress=False)
    assert (again.text, again.cached) == ("new", True)


def test_cache_keeps_answers_that_arrived_before_a_failure(openai_client, tmp_path):
    def answer(request):
        import httpx2

        if json.loads(request.content)["messages"][-1]["content"] == "p2":
            return httpx2.Response(400, json={"error": {"message": "bad prompt", "type": "invalid_request_error"}})
        return httpx2.Response(200, json=OPENAI_COMPLETION)

    prompts = [Prompt.of(f"p{i}", max_tokens=4) for i in range(3)]
    cached = CachedClient(openai_client(RecordedServer(answer), max_concurrency=1), tmp_path)
    with pytest.raises(Exception, match="bad prompt"):
        cached.complete(prompts, progress=False)
    assert cached.path(prompts[0]).exists() and cached.path(prompts[1]).exists()
    assert not cached.path(prompts[2]).exists()


def test_cache_keeps_an_answer_that_was_still_running_when_another_failed(openai_client, tmp_path):
    """p0 fails while p1 is in flight; p1 answers a moment after the failure and is saved all the same."""
    p1_in, p0_failed = threading.Event(), threading.Event()

    def answer(request):
        import httpx2

        if json.loads(request.content)["messages"][-1]["content"] == "p0":
            p1_in.wait(timeout=10)
            p0_failed.set()
            return httpx2.Response(400, json={"error": {"message": "bad prompt", "type": "invalid_request_error"}})
        p1_in.set()
        p0_failed.wait(timeout=10)
        threading.Event().wait(0.2)  # the caller's thread sees p0's failure first
        return httpx2.Response(200, json=OPENAI_COMPLETION)

    prompts = [Prompt.of(f"p{i}", max_tokens=4) for i in range(2)]
    cached = CachedClient(openai_client(RecordedServer(answer), max_concurrency=2), tmp_path)
    with pytest.raises(Exception, match="bad prompt"):
        cached.complete(prompts, progress=False)
    assert cached.path(prompts[1]).exists() and not cached.path(prompts[0]).exists()


def test_cache_file_holding_another_request_is_reported(tmp_path):
    cached = CachedClient(ScriptedReplies(["x"]), tmp_path)
    a, b = Prompt.of("a", max_tokens=8), Prompt.of("b", max_tokens=8)
    cached.complete([a], progress=False)
    cached.path(a).rename(cached.path(b))
    with pytest.raises(InputError, match="another request"):
        cached.complete([b], progress=False)
    with pytest.raises(InputError, match="mode"):
        CachedClient(ScriptedReplies([]), tmp_path, mode="offline")


# --- estimates and tallies ------------------------------------------------------------------------------------


def test_estimate_matches_a_hand_count_and_sends_nothing(anthropic_client):
    prompts = [Prompt(system="abcdefghijkl", messages=(("user", "hello world"), ("assistant", "ok")),
                      max_tokens=10),
               Prompt.of("x" * 9, max_tokens=20)]
    # ceil(chars / 4) per text: system 12 → 3, "hello world" 11 → 3, "ok" 2 → 1; "x"*9 → 3
    estimate = estimate_cost(prompts, Prices(3.0, 15.0))
    assert (estimate.prompts, estimate.input_tokens, estimate.max_output_tokens) == (2, 10, 30)
    assert estimate.dollars == pytest.approx((10 * 3.0 + 30 * 15.0) / 1e6)
    assert "characters per token" in estimate.method and "given by the caller" in estimate.method

    server = RecordedServer(lambda request: pytest.fail("estimate sent a request"))
    listed = anthropic_client(server).estimate(prompts)  # claude-haiku-4-5: $1 in, $5 out per million
    assert listed.dollars == pytest.approx((10 * 1.0 + 30 * 5.0) / 1e6) and "list price as of" in listed.method
    assert server.requests == [] and "$0.0002" in str(listed)


def test_estimate_counts_with_a_tokenizer_and_knows_no_price_for_unknown_models():
    class WordTokenizer:
        def encode(self, text):
            return text.split()

    prompts = [Prompt(system="two words", messages=(("user", "three more words"),), max_tokens=5)]
    estimate = estimate_cost(prompts, list_prices("my-local-llama"), tokenizer=WordTokenizer())
    assert (estimate.input_tokens, estimate.max_output_tokens, estimate.dollars) == (5, 5, None)
    assert estimate_cost(prompts, None, tokenizer=lambda text: 100).input_tokens == 200
    assert list_prices("claude-sonnet-4-5-20250929") == list_prices("claude-sonnet-4-5") is not None
    assert list_prices("gpt-4o-mini-2024-07-18").input_per_million == 0.15
    assert list_prices("gpt-4o-2024-08-06").input_per_million == 2.5


def test_cached_estimate_counts_only_what_would_be_sent(tmp_path):
    a, b = Prompt.of("aaaa", max_tokens=3), Prompt.of("bbbbbbbb", max_tokens=7)
    cached = CachedClient(ScriptedReplies(["x"]), tmp_path)
    cached.complete([a], progress=False)
    estimate = cached.estimate([a, b])
    assert (estimate.prompts, estimate.cached_prompts, estimate.input_tokens, estimate.max_output_tokens) == \
        (1, 1, 2, 7)


def test_tally_counts_cached_answers_as_free():
    model = "claude-haiku-4-5-20251001"  # $1 in, $5 out per million (list)
    completions = [Completion("a", 1000, 200, False, model), Completion("b", 3000, 100, False, model),
                   Completion("c", 5000, 5000, True, model)]
    spent = tally(completions)
    assert (spent.completions, spent.cached, spent.input_tokens, spent.output_tokens) == (3, 1, 4000, 300)
    assert spent.dollars == pytest.approx((4000 * 1 + 300 * 5) / 1e6)
    assert tally(completions, Prices(10, 0)).dollars == pytest.approx(0.04)
    assert tally([Completion("d", 1, 1, False, "my-local-llama")]).dollars is None
    assert tally([Completion("d", 1, 1, True, "my-local-llama")]).dollars == 0.0


def test_retry_after_headers_and_backoff():
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}) is None
    policy = RetryPolicy(first_wait=2.0, multiplier=2.0, max_wait=10.0)
    assert [policy.wait(i, None) for i in range(4)] == [2.0, 4.0, 8.0, 10.0]
    assert policy.wait(0, 600.0) == 10.0 and policy.wait(3, 0.0) == 0.0
    assert math.isclose(RetryPolicy().wait(1, None), 2.0)
