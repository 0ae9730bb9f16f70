"""`record`: `dataclasses.dataclass` for the agent's value types, at a fraction of its import cost.

The agent's state, changes, model and plan are ~40 small dataclasses, and every process
(each hot-plug, each `apply`) defines them all at import.  `dataclasses.dataclass` compiles
each generated method on its own (`exec` of a source string: up to six per frozen class), and
the `dataclasses` module brings `inspect` (with `ast` and `dis`): together more than any other
import of the hot-plug path, ~1 ms a class.  `record` reads the class's annotations and
defaults itself and writes the same methods with one compile per class:

* `__init__`, the one compiled method (a real signature, as fast as dataclass's), with the
  fields' defaults and `default_factory`s (frozen: written into the instance's `__dict__`);
* `__eq__` comparing the fields with compare=True between instances of the very same class
  (else NotImplemented), `__repr__` of the fields with repr=True: closures over the field
  names (`operator.attrgetter`), compiled once with this module;
* frozen: `__hash__` of the same tuple dataclass hashes, and `__setattr__`/`__delattr__`
  raising `dataclasses.FrozenInstanceError`; not frozen: unhashable (`__hash__ = None`).

`field`, `fields` and `replace` here are dataclasses' for these classes, without importing it.
The standard library's own (`dataclasses.fields`, `replace`, `is_dataclass`, `asdict`) work
too: `__dataclass_fields__` is made, with dataclasses' Field objects, the first time one asks.
Only what the agent uses is supported: `@record` and `@record(frozen=True)`, fields with a
default, a default_factory, compare=False or repr=False, inheriting a record's fields
(tests/unit/test_record.py checks each against `dataclasses.dataclass`).
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field of a record: what `dataclasses.Field` says of it that the agent uses."""

    __slots__ = ("name", "type", "default", "default_factory", "compare", "repr", "hash")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Any = MISSING,
        compare: bool = True,
        repr: bool = True,
        hash: Optional[bool] = None,
    ) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name, self.type = "", ""
        self.default, self.default_factory = default, default_factory
        self.compare, self.repr, self.hash = compare, repr, hash


def field(
    *,
    default: Any = MISSING,
    default_factory: Any = MISSING,
    compare: bool = True,
    repr: bool = True,
    hash: Optional[bool] = None,
) -> Any:
    """`dataclasses.field` for a record."""
    return Field(default, default_factory, compare, repr, hash)


def fields(obj: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance (a dataclass: dataclasses.fields)."""
    found = getattr(obj, "__record_fields__", None)
    if found is None:
        import dataclasses

        return dataclasses.fields(obj)  # type: ignore[return-value]
    return found  # type: ignore[no-any-return]


def replace(obj: Any, **changes: Any) -> Any:
    """A copy of a record with some fields changed (a dataclass: dataclasses.replace)."""
    found = getattr(type(obj), "__record_fields__", None)
    if found is None:
        import dataclasses

        return dataclasses.replace(obj, **changes)
    values = {f.name: getattr(obj, f.name) for f in found}
    values.update(changes)
    return obj.__class__(**values)


def record(cls: Optional[type] = None, *, frozen: bool = False) -> Any:
    """A class decorator equivalent to `dataclasses.dataclass` / `dataclass(frozen=True)`."""

    def wrap(c: type) -> type:
        return _make(c, frozen)

    return wrap if cls is None else wrap(cls)


def _collect(cls: type) -> tuple[Field, ...]:
    """The fields: a record base's first, then this class's annotations in order (a
    `field()` or plain default as the class attribute, as dataclass takes them)."""
    out: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get("__record_fields__", ()):
            out[f.name] = f
    for name, kind in cls.__dict__.get("__annotations__", {}).items():
        if "ClassVar" in str(kind):
            continue  # not a field, for dataclass either
        value = _ours(cls.__dict__.get(name, MISSING))
        f = value if isinstance(value, Field) else Field(default=value)
        f.name, f.type = name, kind
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        out[name] = f
    seen_default = False
    for f in out.values():
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default |= has_default
    return tuple(out.values())


def _ours(value: Any) -> Any:
    """A `dataclasses.field()` given as a default, as our Field (else the value itself)."""
    kind = type(value)
    if kind.__name__ != "Field" or kind.__module__ != "dataclasses":
        return value
    import dataclasses

    def given(v: Any) -> Any:
        return MISSING if v is dataclasses.MISSING else v

    return Field(
        given(value.default), given(value.default_factory), value.compare, value.repr, value.hash
    )


class _DataclassFields:
    """`__dataclass_fields__` on first use, for the standard library's helpers."""

    def __get__(self, obj: Any, owner: type) -> dict[str, Any]:
        import dataclasses

        made = {}
        for f in owner.__record_fields__:  # type: ignore[attr-defined]
            kw: dict[str, Any] = {"compare": f.compare, "repr": f.repr, "hash": f.hash}
            if f.default is not MISSING:
                kw["default"] = f.default
            if f.default_factory is not MISSING:
                kw["default_factory"] = f.default_factory
            d = dataclasses.field(**kw)
            d.name, d.type = f.name, f.type
            d._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
            made[f.name] = d
        owner.__dataclass_fields__ = made  # once per class
        return made


class FrozenInstanceError(AttributeError):
    """Stands in for dataclasses.FrozenInstanceError until something imports dataclasses."""


def _frozen_error() -> type:
    import sys

    dc = sys.modules.get("dataclasses")
    return dc.FrozenInstanceError if dc is not None else FrozenInstanceError


def _make(cls: type, frozen: bool) -> type:
    own = dict(cls.__dict__)  # what the class defines itself is kept, as dataclass does
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    found = _collect(cls)
    cls.__record_fields__ = found  # type: ignore[attr-defined]
    cls.__record_frozen__ = frozen  # type: ignore[attr-defined]
    cls.__dataclass_fields__ = _DataclassFields()  # type: ignore[attr-defined]
    cls.__match_args__ = tuple(f.name for f in found)  # type: ignore[attr-defined]
    methods = {"__init__": _lazy_init(cls, found, frozen)}
    methods.update(_compare(found))
    if frozen:
        if "__setattr__" in own or "__delattr__" in own:
            raise TypeError(f"cannot overwrite __setattr__/__delattr__ in {cls.__name__}")
        methods.update(_frozen(cls, found))
        if not explicit_hash:
            methods["__hash__"] = _hash(found)
    for name, fn in methods.items():
        if name not in own or name == "__hash__":
            fn.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, fn)
    if not frozen and not explicit_hash:
        cls.__hash__ = None  # type: ignore[assignment]  # what dataclass(eq=True) does
    if own.get("__doc__") is None:  # what dataclass writes, less the annotations
        cls.__doc__ = f"{cls.__name__}({', '.join(_param(f) for f in found)})"
    return cls


def _param(f: Field) -> str:
    if f.default_factory is not MISSING:
        return f"{f.name}=<factory>"
    return f.name if f.default is MISSING else f"{f.name}={f.default!r}"


class _Factory:
    """The default of a default_factory argument: call the factory (dataclass's marker)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _lazy_init(cls: type, found: tuple[Field, ...], frozen: bool) -> Any:
    """An __init__ that compiles the real one (`_init`) at the class's first instance, puts it
    in its place and runs it.  Compiling costs ~0.2 ms a class, and a run instantiates only
    some of the ~40 (a no-op apply never builds a change): the rest cost nothing."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = cls.__dict__["__init__"]
        if init is __init__:  # the first instance of `cls` (or of a subclass using it)
            init = _init(found, frozen)
            init.__qualname__ = f"{cls.__qualname__}.__init__"
            cls.__init__ = init  # type: ignore[misc]
        init(self, *args, **kwargs)

    return __init__


def _init(found: tuple[Field, ...], frozen: bool) -> Any:
    """The one compiled method: a real signature, and as fast as dataclass's.

    Compiled once, ahead of time: `_record_inits.py` holds the __init__ of every record
    class of the agent, as a module whose bytecode Python caches like any other, so a run
    makes each from its code object instead of compiling it (28 compiles were ~3 ms of every
    run).  A class it does not hold (changed since, or not the agent's) is compiled here.
    `python tools/record_inits.py` writes the module; tests/unit/test_record.py checks that
    it holds every record class of the agent."""
    src, env, defaults = init_source(found, frozen)
    made = _ahead_of_time(src)
    if made is not None:
        init = _Function(made.__code__, env, "__init__", defaults or None)
    else:
        ns: dict[str, Any] = {}
        exec(src, env, ns)
        init = ns["__init__"]
    init.__annotations__ = {**{f.name: f.type for f in found}, "return": None}
    return init


_Function = type(_init)  # types.FunctionType
_AHEAD: Optional[dict[str, Any]] = None


def _ahead_of_time(src: str) -> Any:
    """The function compiled ahead of time from this source (without its defaults), or None."""
    global _AHEAD
    if _AHEAD is None:
        try:
            from ._record_inits import INITS
        except ImportError:  # a tree without it: everything is compiled at first use
            INITS = {}
        _AHEAD = INITS
    return _AHEAD.get(src)


def init_source(found: tuple[Field, ...], frozen: bool) -> tuple[str, dict[str, Any], tuple]:
    """The __init__ of a record with these fields: (its source, the globals it needs, its
    parameters' defaults in order)."""
    import builtins

    env: dict[str, Any] = {"_factory_marker": _FACTORY, "__builtins__": builtins}
    params, body, frozen_values, defaults = ["self"], [], [], []
    for f in found:
        value = f.name
        if f.default_factory is not MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_factory_marker")
            defaults.append(_FACTORY)
            value = f"_factory_{f.name}() if {f.name} is _factory_marker else {f.name}"
        elif f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
            defaults.append(f.default)
        else:
            params.append(f.name)
        if frozen:
            frozen_values.append(f"{f.name}={value}")
        else:
            body.append(f"    self.{f.name} = {value}")
    if frozen_values:
        # Straight into the instance's __dict__, past the frozen __setattr__: one call for
        # all fields, half of what one object.__setattr__ a field costs (records have no
        # __slots__ nor descriptors for their fields; thousands are made in a first apply).
        body.append(f"    self.__dict__.update({', '.join(frozen_values)})")
    src = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    return src, env, tuple(defaults)


def _key(names: list[str]) -> Callable[[Any], tuple]:
    """The tuple of these attributes (a tuple also for one or none: the same hash as
    dataclass's `hash((self.a,))`)."""
    if len(names) >= 2:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda self: (one(self),)
    return lambda self: ()


def _compare(found: tuple[Field, ...]) -> dict[str, Callable[..., Any]]:
    key = _key([f.name for f in found if f.compare])
    shown = [f.name for f in found if f.repr]

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{self.__class__.__qualname__}({inner})"

    return {"__eq__": __eq__, "__repr__": __repr__}


def _hash(found: tuple[Field, ...]) -> Callable[[Any], int]:
    key = _key([f.name for f in found if (f.compare if f.hash is None else f.hash)])

    def __hash__(self: Any) -> int:
        return hash(key(self))

    return __hash__


def _frozen(cls: type, found: tuple[Field, ...]) -> dict[str, Callable[..., Any]]:
    names = frozenset(f.name for f in found)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise _frozen_error()(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise _frozen_error()(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return {"__setattr__": __setattr__, "__delattr__": __delattr__}
