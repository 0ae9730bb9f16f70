"""record.record behaves as dataclasses.dataclass for every feature the agent uses."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from dataclasses import field
from typing import Any, Callable, Optional

import pytest

from eni_guest import state
from eni_guest.record import record


def make(decorate: Callable[[type], type]) -> type:
    class Sample:
        a: int
        b: str = "x"
        c: list = field(default_factory=list)
        d: Optional[object] = field(default=None, compare=False, repr=False)

        @property
        def twice(self) -> int:
            return self.a * 2

    return decorate(Sample)


KINDS = [
    (lambda c: dataclasses.dataclass(c), lambda c: record(c)),
    (lambda c: dataclasses.dataclass(frozen=True)(c), lambda c: record(frozen=True)(c)),
]


@pytest.mark.parametrize(("reference", "ours"), KINDS)
def test_same_init_repr_eq_hash_and_helpers(reference: Any, ours: Any) -> None:
    Ref, Our = make(reference), make(ours)
    for cls in (Ref, Our):
        one = cls(1)
        assert (repr(one), one.twice) == ("make.<locals>.Sample(a=1, b='x', c=[])", 2)
        assert one == cls(1) and one != cls(2) and one == cls(1, d="ignored")
        assert cls(1).c is not cls(1).c  # a fresh list each time
        assert one.__eq__(object()) is NotImplemented
        assert dataclasses.is_dataclass(one)
        assert [f.name for f in dataclasses.fields(one)] == ["a", "b", "c", "d"]
        assert dataclasses.replace(one, a=5) == cls(5)
        assert copy.deepcopy(one) == one
        with pytest.raises(TypeError):
            cls()  # a is required
    assert Ref(1) != Our(1)  # instances of different classes never compare equal
    if Ref.__hash__ is not None:  # frozen: the very hash dataclass computes
        assert hash(Ref(1, c=())) == hash(Our(1, c=())) == hash((1, "x", ()))
    assert (Ref.__hash__ is None) == (Our.__hash__ is None)
    frozen = Ref.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for cls in (Ref, Our):
        one = cls(1, c=())  # hashable when frozen
        if frozen:
            assert hash(one) == hash(cls(1, c=(), d="ignored"))
            with pytest.raises(dataclasses.FrozenInstanceError):
                one.a = 2
            with pytest.raises(dataclasses.FrozenInstanceError):
                del one.b
        else:
            one.a = 2
            assert one.a == 2


def test_frozen_hash_matches_dataclass_on_the_agent_types() -> None:
    """The kernel's values are dict keys everywhere: hashing and equality as before."""
    link = state.Link(index=3, name="eth1", mac="0e:00:00:00:00:01", group=1, up=True, mtu=9001)
    again = pickle.loads(pickle.dumps(link))
    assert again == link and hash(again) == hash(link) and {link: 1}[again] == 1
    assert dataclasses.replace(link, name="ens6").name == "ens6"
    with pytest.raises(dataclasses.FrozenInstanceError):
        link.name = "x"  # type: ignore[misc]


def test_methods_a_class_defines_itself_are_kept() -> None:
    @record(frozen=True)
    class Own:
        a: int

        def __repr__(self) -> str:
            return "mine"

        def __hash__(self) -> int:
            return 7

    assert repr(Own(1)) == "mine" and hash(Own(1)) == 7 and Own(1) == Own(1)


def test_own_helpers_inheritance_and_no_dataclasses_import() -> None:
    from eni_guest import record as rec

    @record
    class Base:
        a: int
        tags: list = rec.field(default_factory=list)

    @record
    class Child(Base):
        b: str = "x"

    c = Child(1)
    assert [f.name for f in rec.fields(c)] == ["a", "tags", "b"]
    assert [f.name for f in dataclasses.fields(c)] == ["a", "tags", "b"]  # made on demand
    assert rec.replace(c, b="y") == Child(1, [], "y") == dataclasses.replace(c, b="y")
    assert dataclasses.asdict(c) == {"a": 1, "tags": [], "b": "x"}
    assert Child.__match_args__ == ("a", "tags", "b")
    with pytest.raises(TypeError, match="non-default argument"):

        @record
        class Wrong:
            a: int = 0
            b: int

    code = (
        "import sys, eni_guest.agent, eni_guest.hotplug, eni_guest.kernel; "
        "print('dataclasses' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "False"  # nor inspect, ast and dis with it


@pytest.mark.parametrize(("reference", "ours"), KINDS)
def test_init_is_compiled_at_the_first_instance_and_then_is_dataclasses(
    reference: Any, ours: Any
) -> None:
    """The class's own __init__ stands in until its first instance (record._lazy_init); from
    then on it is the compiled one, with dataclass's signature, for the class and its
    subclasses alike."""
    import inspect

    ref, rec = reference(make(lambda c: c)), ours(make(lambda c: c))

    class Sub(rec):  # type: ignore[misc,valid-type]
        pass

    stub = rec.__dict__["__init__"]
    assert Sub(5, "y").b == "y"  # a subclass's first instance compiles it too
    assert rec.__dict__["__init__"] is not stub
    assert str(inspect.signature(rec)) == str(inspect.signature(ref))  # (<factory>: a marker each)
    assert rec(1) == rec(1, "x") and rec(1) != rec(2)
    with pytest.raises(TypeError):
        rec()  # a missing argument is refused as dataclass's __init__ refuses it


def test_every_record_class_of_the_agent_is_compiled_ahead_of_time() -> None:
    """A run compiles no __init__: each record class's source is in _record_inits.py.  If
    this fails, a record class changed: run `python tools/record_inits.py`."""
    from eni_guest._record_inits import INITS

    record_inits = _tool()

    missing = [src.split("\n")[0] for src in record_inits.sources() if src not in INITS]
    assert not missing, f"run `python tools/record_inits.py`: not compiled ahead: {missing}"
    assert len(INITS) == len(record_inits.sources())  # and none left over


@pytest.mark.parametrize("frozen", [False, True])
def test_an_init_compiled_ahead_of_time_is_the_one_compiled_at_first_use(
    monkeypatch: pytest.MonkeyPatch, frozen: bool
) -> None:
    """Made from _record_inits.py's code object, with the class's own defaults and
    factories, it behaves as the one compiled from the source (a class it does not hold)."""
    from eni_guest import record as rec_module
    from eni_guest.record import init_source

    ahead = record(frozen=frozen)(make(lambda c: c))
    src = init_source(ahead.__record_fields__, frozen)[0]
    ns: dict[str, Any] = {}
    exec(_tool().without_defaults(src), ns)  # as tools/record_inits.py writes it
    monkeypatch.setattr(rec_module, "_AHEAD", {src: ns["__init__"]})
    ahead(1)  # compiles nothing: takes the code object
    assert ahead.__dict__["__init__"].__code__ is ns["__init__"].__code__
    monkeypatch.setattr(rec_module, "_AHEAD", {})
    compiled = record(frozen=frozen)(make(lambda c: c))
    for args in [(1,), (1, "y"), (1, "y", [2], object())]:
        a, b = ahead(*args), compiled(*args)
        assert (a.a, a.b, a.c, a.d) == (b.a, b.b, b.c, b.d)
    assert ahead(1).c is not ahead(1).c  # a fresh list each time, from the class's factory
    with pytest.raises(TypeError):
        ahead()


def _tool() -> Any:
    """tools/record_inits.py, which writes src/eni_guest/_record_inits.py."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "record_inits.py"
    spec = importlib.util.spec_from_file_location("record_inits", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
