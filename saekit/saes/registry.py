"""The architectures by name: `register` adds a class, `sae_class` finds one."""

from __future__ import annotations

from saekit.errors import InputError
from saekit.saes.base import SAE

_ARCHITECTURES: dict[str, type[SAE]] = {}


def register(cls: type[SAE]) -> type[SAE]:
    """Class decorator: make an SAE subclass creatable and loadable by its `arch` name."""
    if not cls.arch:
        raise ValueError(f"{cls.__name__} must set the class attribute `arch` before it is registered")
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
