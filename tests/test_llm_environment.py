"""The client a notebook gets from its environment: none, a provider's, or recorded answers replayed offline."""

from __future__ import annotations

import pytest

from saekit.errors import InputError
from saekit.llm import CachedClient, Completion, Prompt
from saekit.llm.environment import RecordedOnly, client_from_environment

VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SAEKIT_AUTOINTERP_MODEL",
             "SAEKIT_AUTOINTERP_REPLAY")


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_nothing_set_means_offline():
    assert client_from_environment() is None


def test_a_key_picks_its_provider(monkeypatch, tmp_path):
    pytest.importorskip("anthropic")
    pytest.importorskip("openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    client = client_from_environment(tmp_path)
    assert isinstance(client, CachedClient) and (client.provider, client.model) == ("anthropic", "claude-haiku-4-5")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match="SAEKIT_AUTOINTERP_MODEL"):
        client_from_environment()
    monkeypatch.setenv("SAEKIT_AUTOINTERP_MODEL", "llama-3-8b")
    client = client_from_environment()
    assert (client.provider, client.model) == ("openai", "llama-3-8b")


def test_replay_answers_recorded_prompts_and_sends_nothing(monkeypatch, tmp_path):
    asked, new = Prompt.of("what is feature 3?", max_tokens=20), Prompt.of("and feature 4?", max_tokens=20)
    CachedClient(RecordedOnly("anthropic", "claude-haiku-4-5"), tmp_path).store(
        asked, Completion("base64 text", 10, 3, False, "claude-haiku-4-5"))
    monkeypatch.setenv("SAEKIT_AUTOINTERP_REPLAY", "anthropic")
    with pytest.raises(InputError, match="cache="):
        client_from_environment()
    client = client_from_environment(tmp_path)
    [answer] = client.complete([asked], progress=False)
    assert answer.text == "base64 text" and answer.cached
    with pytest.raises(InputError, match="no cached answer"):
        client.complete([new], progress=False)
    monkeypatch.setenv("SAEKIT_AUTOINTERP_REPLAY", "someone")
    with pytest.raises(InputError, match="anthropic or openai"):
        client_from_environment(tmp_path)
