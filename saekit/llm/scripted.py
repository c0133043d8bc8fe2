"""Fixed replies for tests and documentation: NOT a language model. It answers with texts given in advance
(or computed from the prompt by a function the caller writes), so code that calls an LLMClient can run
offline; nothing it returns says anything about a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from saekit.errors import InputError
from saekit.llm.client import Completion, CostEstimate, OnCompletion, Prompt
from saekit.llm.pricing import Prices, estimate_cost

NOT_A_MODEL = "scripted-replies (not a language model)"


class ScriptedReplies:
    """Answers prompts with `replies`: the i-th prompt it is sent (over all calls) gets replies[i], or
    replies(prompt) when it is a function. Token counts are 0 and it costs nothing; `received` lists the
    prompts sent to it, in order."""

    provider = "scripted"

    def __init__(self, replies: Sequence[str] | Callable[[Prompt], str], model: str = NOT_A_MODEL) -> None:
        if not callable(replies) and (isinstance(replies, str) or not all(isinstance(r, str) for r in replies)):
            raise InputError("ScriptedReplies: replies must be a sequence of strings or a function prompt → str")
        self.replies = replies
        self.model = model
        self.received: list[Prompt] = []

    def _reply(self, prompt: Prompt) -> str:
        if callable(self.replies):
            return self.replies(prompt)
        if len(self.received) >= len(self.replies):
            raise InputError(f"ScriptedReplies: asked for reply {len(self.received) + 1} but only "
                             f"{len(self.replies)} were scripted")
        return self.replies[len(self.received)]

    def complete(self, prompts: Sequence[Prompt], progress: bool = True,
                 on_completion: OnCompletion | None = None) -> list[Completion]:
        """The scripted reply to each prompt, in order."""
        completions = []
        for i, prompt in enumerate(prompts):
            completion = Completion(text=self._reply(prompt), input_tokens=0, output_tokens=0, cached=False,
                                    model=self.model, stop_reason="scripted")
            self.received.append(prompt)
            completions.append(completion)
            if on_completion is not None:
                on_completion(i, completion)
        return completions

    def estimate(self, prompts: Sequence[Prompt]) -> CostEstimate:
        """Token estimates as for a real model, at no price."""
        return estimate_cost(list(prompts), Prices(0.0, 0.0, "scripted replies cost nothing"))
