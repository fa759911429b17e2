"""Name -> compressor class, so configs and users pick methods by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from fedadc.compression.base import Compressor
from fedadc.model.spec import TokenSpec

_REGISTRY: dict[str, type[Compressor]] = {}

C = TypeVar("C", bound=type[Compressor])


def register_compressor(name: str) -> Callable[[C], C]:
    """Class decorator adding a method to the registry under ``name``."""

    def wrap(cls: C) -> C:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"compressor name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_compressors() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def compressor_params(name: str) -> dict[str, object]:
    """Constructor parameters of a method and their defaults (``inspect.Parameter.empty``
    when required), e.g. to validate a config before building anything."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[2:]}


def ratio_params(name: str) -> dict[str, str]:
    """A method's ratio parameters -> their short tag (``{}`` for unknown methods, e.g. a
    report over runs of a method this version no longer has)."""
    cls = _REGISTRY.get(name)
    return dict(cls.ratio_params) if cls is not None else {}


def create_compressor(name: str, spec: TokenSpec, **params: object) -> Compressor:
    """Build method ``name`` for the split described by ``spec``.

    Unknown methods or parameters raise ``ValueError`` listing the valid ones.
    """
    cls = _lookup(name)
    valid = compressor_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for compressor {name!r}; "
            f"valid parameters: {sorted(valid) or 'none'}"
        )
    return cls(spec, **params)


def _lookup(name: str) -> type[Compressor]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown compressor {name!r}; choose one of {list_compressors()}"
        ) from None
