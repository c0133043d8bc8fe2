"""The architectures by name: `register` adds a class, `sae_class` finds one by saekit's name and
`saelens_class` by the `architecture` a SAELens cfg.json gives."""

from __future__ import annotations

from saekit.errors import InputError
from saekit.saes.base import SAE

_ARCHITECTURES: dict[str, type[SAE]] = {}


def register(cls: type[SAE]) -> type[SAE]:
    """Class decorator: make an SAE subclass creatable and loadable by its `arch` name (and by the SAELens
    architectures it reads). A name already taken by another class is refused, never overwritten."""
    if not cls.arch:
        raise ValueError(f"{cls.__name__} must set the class attribute `arch` before it is registered")
    taken = _ARCHITECTURES.get(cls.arch)
    if taken is not None and taken is not cls:
        raise ValueError(f"architecture name {cls.arch!r} is taken by {taken.__module__}.{taken.__qualname__}; "
                         f"give {cls.__name__} another `arch`")
    for name in cls.saelens_reads:
        reader = next((c for c in _ARCHITECTURES.values() if name in c.saelens_reads and c is not cls), None)
        if reader is not None:
            raise ValueError(f"SAELens architecture {name!r} is read as {reader.arch!r} already: set "
                             f"{cls.__name__}.saelens_reads to the SAELens architectures only it reads (or ())")
    if cls.sparsity_penalty not in (None, "l1", "l0"):
        raise ValueError(f"{cls.__name__}.sparsity_penalty must be 'l1', 'l0' or None (got {cls.sparsity_penalty!r})")
    _ARCHITECTURES[cls.arch] = cls
    return cls


def architectures() -> list[str]:
    """The registered architecture names."""
    return sorted(_ARCHITECTURES)


def sae_class(arch: str) -> type[SAE]:
    """The SAE class registered under `arch`; a clear error lists the choices otherwise."""
    try:
        return _ARCHITECTURES[arch]
    except KeyError:
        raise InputError(f"unknown SAE architecture {arch!r}; choose one of {architectures()}") from None


def saelens_architectures() -> list[str]:
    """The SAELens `architecture` values saekit loads."""
    return sorted(name for cls in _ARCHITECTURES.values() for name in cls.saelens_reads)


def saelens_class(architecture: str) -> type[SAE] | None:
    """The class that loads SAELens's `architecture`, or None where none does."""
    return next((cls for cls in _ARCHITECTURES.values() if architecture in cls.saelens_reads), None)
