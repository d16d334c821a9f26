"""Frozen value classes that are cheap to make.

The spec makes several frozen values per packet (its packets, results, table
events, expectation tuples, firings). The ``__init__`` a frozen dataclass
gets stores every field with ``object.__setattr__`` (its own ``__setattr__``
refuses), which costs twice what storing through the field's slot does: a
tenth of the spec core's time went there. :func:`value` is
``@dataclass(frozen=True, slots=True)`` with an ``__init__`` that stores
through the slots. Everything else - equality, hash, order, repr, pickling,
``dataclasses.replace()``, and refusing assignment afterwards - is the
dataclass's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def value(cls: type[T] | None = None, /, **options: Any) -> Any:
    """``@value`` or ``@value(order=True)``: a frozen, slotted dataclass.

    Only plain fields are supported (no ``default_factory``, ``init=False``,
    keyword-only fields or ``__post_init__``): a class that needs them stays
    a plain dataclass."""

    def wrap(cls: type[T]) -> type[T]:
        cls = dataclasses.dataclass(cls, frozen=True, slots=True, **options)  # type: ignore[call-overload]
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        plain = all(f.init and not f.kw_only and f.default_factory is dataclasses.MISSING for f in fields)
        if not plain or hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__}: @value takes plain fields only")
        cls.__init__ = _slot_init(cls, fields)  # type: ignore[misc]
        return cls

    return wrap if cls is None else wrap(cls)


def _slot_init(cls: type, fields: tuple[dataclasses.Field, ...]) -> Callable[..., None]:
    # Built from source like the dataclass's own __init__, so that the
    # signature (names, defaults, keywords) is the same.
    namespace: dict[str, Any] = {}
    params = []
    for f in fields:
        namespace[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _set_{f.name}(self, {f.name})\n" for f in fields) or "    pass\n"
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", namespace)  # noqa: S102 - generated from field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the dataclass's own, for documentation
    return init
