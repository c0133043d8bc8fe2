"""Answers kept on disk, one JSON file per response, so a rerun (or a class without a network) costs nothing.

A response's key hashes what decides the answer: provider, model, system prompt, messages, max_tokens and
temperature; not the server's address, so the same model behind another URL finds the same answers.
Modes: "use" reads what is cached and sends the rest; "replay" never sends (a missing answer is an error,
before anything is sent); "refresh" sends everything and overwrites.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from saekit.errors import InputError
from saekit.formats import atomic_write
from saekit.llm.client import Completion, CostEstimate, LLMClient, OnCompletion, Prompt

CacheMode = Literal["use", "replay", "refresh"]
MODES: tuple[str, ...] = ("use", "replay", "refresh")
FORMAT = "saekit.llm.cache/1"


def request_fields(provider: str, model: str, prompt: Prompt) -> dict[str, Any]:
    """Everything a cached answer is keyed by, as JSON-able values."""
    return {"provider": provider, "model": model, "system": prompt.system,
            "messages": [list(message) for message in prompt.messages],
            "max_tokens": prompt.max_tokens, "temperature": prompt.temperature}


def request_key(provider: str, model: str, prompt: Prompt) -> str:
    """sha256 (hex) of the request's fields in canonical JSON."""
    text = json.dumps(request_fields(provider, model, prompt), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedClient:
    """Wraps any client: answers found in `folder` come back with cached=True; the others are sent through the
    wrapped client (identical prompts once) and saved as each arrives."""

    def __init__(self, client: LLMClient, folder: str | Path, mode: CacheMode = "use") -> None:
        if mode not in MODES:
            raise InputError(f"CachedClient: mode must be one of {MODES}, got {mode!r}")
        self.client = client
        self.folder = Path(folder)
        self.mode = mode
        self.provider = client.provider
        self.model = client.model

    def path(self, prompt: Prompt) -> Path:
        """The file that holds (or would hold) `prompt`'s answer."""
        return self.folder / f"{request_key(self.provider, self.model, prompt)}.json"

    def lookup(self, prompt: Prompt) -> Completion | None:
        """The cached answer to `prompt`, or None."""
        path = self.path(prompt)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stored = record["completion"]
            matches = record["request"] == request_fields(self.provider, self.model, prompt)
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"cached response {path} is unreadable ({error}); delete it to send again") from error
        if not matches:
            raise InputError(f"cached response {path} holds another request; delete it to send again")
        return Completion(text=stored["text"], input_tokens=stored["input_tokens"],
                          output_tokens=stored["output_tokens"], cached=True, model=stored["model"],
                          stop_reason=stored.get("stop_reason"))

    def store(self, prompt: Prompt, completion: Completion) -> Path:
        """Save `completion` as `prompt`'s answer (atomically: a reader never sees half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"format": FORMAT, "request": request_fields(self.provider, self.model, prompt),
                  "completion": {"text": completion.text, "input_tokens": completion.input_tokens,
                                 "output_tokens": completion.output_tokens, "model": completion.model,
                                 "stop_reason": completion.stop_reason}}
        path = self.path(prompt)
        text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return path

    def _split(self, prompts: Sequence[Prompt]) -> tuple[dict[int, Completion], list[Prompt]]:
        """Cached answers by index, and the distinct prompts still to send."""
        found: dict[int, Completion] = {}
        if self.mode != "refresh":
            for i, prompt in enumerate(prompts):
                completion = self.lookup(prompt)
                if completion is not None:
                    found[i] = completion
        missing = list(dict.fromkeys(p for i, p in enumerate(prompts) if i not in found))
        return found, missing

    def complete(self, prompts: Sequence[Prompt], progress: bool = True,
                 on_completion: OnCompletion | None = None) -> list[Completion]:
        """Cached answers where there are some (per the mode), the rest sent; in the prompts' order."""
        prompts = list(prompts)
        found, missing = self._split(prompts)
        if missing and self.mode == "replay":
            raise InputError(
                f"replay mode: {len(missing)} of {len(set(prompts))} distinct prompts have no cached answer in "
                f"{self.folder} (the first expects {self.path(missing[0]).name}); nothing was sent. Run once with "
                "mode='use' and a network to record them, or pass the folder the answers were recorded in")
        results: list[Completion | None] = [None] * len(prompts)
        for i, completion in found.items():
            results[i] = completion
            if on_completion is not None:
                on_completion(i, completion)
        where: dict[Prompt, list[int]] = {}
        for i, prompt in enumerate(prompts):
            if i not in found:
                where.setdefault(prompt, []).append(i)

        def arrived(j: int, completion: Completion) -> None:
            self.store(missing[j], completion)
            for i in where[missing[j]]:
                results[i] = completion
                if on_completion is not None:
                    on_completion(i, completion)

        if missing:
            self.client.complete(missing, progress=progress, on_completion=arrived)
        return results  # type: ignore[return-value]

    def estimate(self, prompts: Sequence[Prompt]) -> CostEstimate:
        """What sending the prompts not yet cached would cost (in "refresh" mode, all of them)."""
        found, missing = self._split(list(prompts))
        inner = self.client.estimate(missing)
        return CostEstimate(prompts=inner.prompts, input_tokens=inner.input_tokens,
                            max_output_tokens=inner.max_output_tokens, dollars=inner.dollars,
                            method=inner.method, cached_prompts=len(found))

    def __repr__(self) -> str:
        return f"CachedClient({self.client!r}, folder={str(self.folder)!r}, mode={self.mode!r})"
