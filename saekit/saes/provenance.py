"""Where a dictionary reads its model(s) and what it rebuilds: its provenance, saved with it (the "saekit" block of
cfg.json) so that evaluation, the analyses and the widgets can read the model again where it was trained."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Side = Literal["output", "input"]


@dataclass(frozen=True)
class Provenance:
    """Where a dictionary's activations came from; every field may be unknown (None) for a dictionary built by
    hand, and is then given explicitly where it is needed."""

    model: str | None = None
    """Hub name or absolute model folder (a crosscoder's first model)."""
    models: tuple[str, ...] = ()
    """A crosscoder's models, in the order its input holds their activations; () for one model."""
    hook: str | None = None
    """Dotted module path read, e.g. "transformer.h.0.mlp.act"."""
    hook_side: Side = "output"
    """The module's "output" or its first "input"."""
    target_hook: str | None = None
    """A transcoder's target: the module whose activations it rebuilds; None: it rebuilds what it reads."""
    target_side: Side = "output"
    """The target module's "output" or its first "input"."""
    context_len: int | None = None
    """Tokens per context window it was trained on."""
    text: str | None = None
    """Its training text: a token file, a folder or a dataset name."""
    exclude_special_tokens: bool = True
    """Whether BOS/EOS/PAD positions were left out."""
    training: dict[str, Any] = field(default_factory=dict)
    """The trainer's summary (tokens, scale, final losses, config, ...)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a saved provenance this version does not know: kept, and written back, so nothing is lost."""

    def __post_init__(self) -> None:
        for name in ("hook_side", "target_side"):
            if getattr(self, name) not in ("output", "input"):
                raise ValueError(f"Provenance.{name}={getattr(self, name)!r}: use 'output' or 'input'")
        if self.context_len is not None and self.context_len < 1:
            raise ValueError(f"Provenance.context_len={self.context_len}: a positive token count, or None")
        object.__setattr__(self, "models", tuple(self.models))

    def replace(self, **changes: Any) -> Provenance:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every model it reads: a crosscoder's models, else its one model (() when unknown)."""
        return self.models or ((self.model,) if self.model else ())

    def to_json(self) -> dict[str, Any]:
        """The JSON object cfg.json holds (unknown `extra` keys included; empty and unknown fields left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["models"] = list(self.models)
        out = {k: v for k, v in out.items() if v not in (None, [], {})}
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Provenance:
        """The provenance a cfg.json object holds (keys this version does not know go to `extra`)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        given = {k: v for k, v in values.items() if k in known}
        if "models" in given:
            given["models"] = tuple(given["models"] or ())
        if "training" in given and not isinstance(given["training"], dict):
            given["training"] = {}
        return cls(**given, extra={k: v for k, v in values.items() if k not in known})
