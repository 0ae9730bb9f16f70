"""`record`: `dataclasses.dataclass` for the agent's value types, at a fraction of its import cost.

The agent's state, changes, model and plan are ~40 small dataclasses, and every process
(each hot-plug, each `apply`) defines them all at import.  `dataclasses.dataclass` compiles
each generated method on its own (`exec` of a source string: up to six per frozen class), which
made the classes cost more than any other import of the hot-plug path, ~1 ms each.  `record`
asks `dataclass` for the bookkeeping only (fields, defaults, `__dataclass_fields__`, so that
`dataclasses.fields`, `replace` and `is_dataclass` work as before) and writes the same methods
with less compiling:

* `__init__`, the one compiled method (a real signature, as fast as dataclass's), with the
  fields' defaults and `default_factory`s (frozen: set through `object.__setattr__`);
* `__eq__` comparing the fields with compare=True between instances of the very same class
  (else NotImplemented), `__repr__` of the fields with repr=True: closures over the field
  names (`operator.attrgetter`), compiled once with this module;
* frozen: `__hash__` of the same tuple dataclass hashes, and `__setattr__`/`__delattr__`
  raising `dataclasses.FrozenInstanceError`; not frozen: unhashable (`__hash__ = None`).

Only what the agent uses is supported: `@record` and `@record(frozen=True)`, fields with a
default, a default_factory, compare=False or repr=False (tests/unit/test_record.py checks each
against `dataclasses.dataclass`).
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any, Callable, Optional

_NO_DEFAULT = dataclasses.MISSING


def record(cls: Optional[type] = None, *, frozen: bool = False) -> Any:
    """A class decorator equivalent to `dataclasses.dataclass` / `dataclass(frozen=True)`."""

    def wrap(c: type) -> type:
        return _make(c, frozen)

    return wrap if cls is None else wrap(cls)


def _make(cls: type, frozen: bool) -> type:
    own = dict(cls.__dict__)  # what the class defines itself is kept, as dataclass does
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if own.get("__doc__") is None:
        cls.__doc__ = cls.__name__  # not dataclass's inspect.signature(): ~1 ms a class
    dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    fields = dataclasses.fields(cls)
    methods = {"__init__": _init(cls, fields, frozen)}
    methods.update(_compare(fields))
    if frozen:
        if "__setattr__" in own or "__delattr__" in own:
            raise TypeError(f"cannot overwrite __setattr__/__delattr__ in {cls.__name__}")
        methods.update(_frozen(cls, fields))
        if not explicit_hash:
            methods["__hash__"] = _hash(fields)
    for name, fn in methods.items():
        if name not in own or name == "__hash__":
            fn.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, fn)
    if not frozen and not explicit_hash:
        cls.__hash__ = None  # type: ignore[assignment]  # what dataclass(eq=True) does
    if own.get("__doc__") is None:  # what dataclass writes, less the annotations
        cls.__doc__ = f"{cls.__name__}({', '.join(_param(f) for f in fields)})"
    return cls


def _param(f: dataclasses.Field) -> str:
    if f.default_factory is not _NO_DEFAULT:
        return f"{f.name}=<factory>"
    return f.name if f.default is _NO_DEFAULT else f"{f.name}={f.default!r}"


class _Factory:
    """The default of a default_factory argument: call the factory (dataclass's marker)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _init(cls: type, fields: tuple[dataclasses.Field, ...], frozen: bool) -> Any:
    """The one compiled method: a real signature, and as fast as dataclass's."""
    env: dict[str, Any] = {"_object_setattr": object.__setattr__, "_factory_marker": _FACTORY}
    params, body = ["self"], []
    for f in fields:
        value = f.name
        if f.default_factory is not _NO_DEFAULT:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_factory_marker")
            value = f"_factory_{f.name}() if {f.name} is _factory_marker else {f.name}"
        elif f.default is not _NO_DEFAULT:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
        if frozen:
            body.append(f"    _object_setattr(self, {f.name!r}, {value})")
        else:
            body.append(f"    self.{f.name} = {value}")
    src = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    ns: dict[str, Any] = {}
    exec(src, env, ns)
    init = ns["__init__"]
    init.__annotations__ = {**{f.name: f.type for f in fields}, "return": None}
    return init


def _key(names: list[str]) -> Callable[[Any], tuple]:
    """The tuple of these attributes (a tuple also for one or none: the same hash as
    dataclass's `hash((self.a,))`)."""
    if len(names) >= 2:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda self: (one(self),)
    return lambda self: ()


def _compare(fields: tuple[dataclasses.Field, ...]) -> dict[str, Callable[..., Any]]:
    key = _key([f.name for f in fields if f.compare])
    shown = [f.name for f in fields if f.repr]

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{self.__class__.__qualname__}({inner})"

    return {"__eq__": __eq__, "__repr__": __repr__}


def _hash(fields: tuple[dataclasses.Field, ...]) -> Callable[[Any], int]:
    key = _key([f.name for f in fields if (f.compare if f.hash is None else f.hash)])

    def __hash__(self: Any) -> int:
        return hash(key(self))

    return __hash__


def _frozen(cls: type, fields: tuple[dataclasses.Field, ...]) -> dict[str, Callable[..., Any]]:
    names = frozenset(f.name for f in fields)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return {"__setattr__": __setattr__, "__delattr__": __delattr__}
