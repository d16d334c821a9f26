"""@value classes behave as @dataclass(frozen=True, slots=True) would."""

import dataclasses
import ipaddress
import pickle

import pytest

from sipct.spec.expectation import ConnTuple, ExpectClass, Expectation, ExpectFlag, ExpectTuple
from sipct.spec.helper import Packet, PacketResult
from sipct.spec.values import value

A, B = ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("198.51.100.2")


@value(order=True)
class Fast:
    a: int
    b: str = "x"
    c: tuple = ()


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Plain:
    a: int
    b: str = "x"
    c: tuple = ()


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, "y"), {}), ((1,), {"c": (2,)}), ((), {"a": 3, "b": "z"})])
def test_value_init_stores_what_the_dataclass_init_stores(args, kwargs):
    fast, plain = Fast(*args, **kwargs), Plain(*args, **kwargs)
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    assert hash(fast) == hash(plain)
    assert repr(fast).replace("Fast", "Plain") == repr(plain)
    assert fast == Fast(*args, **kwargs) and not fast < Fast(*args, **kwargs)
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert dataclasses.replace(fast, b="w").b == "w"


def test_value_init_refuses_what_the_dataclass_init_refuses():
    with pytest.raises(TypeError):
        Fast()
    with pytest.raises(TypeError):
        Fast(1, "y", (), 4)
    with pytest.raises(TypeError):
        Fast(1, d=2)
    for cls in (Fast, Plain):
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls(1).a = 2  # type: ignore[misc]


def test_value_refuses_fields_it_cannot_store_plainly():
    with pytest.raises(TypeError, match="plain fields"):
        @value
        class WithFactory:
            a: list = dataclasses.field(default_factory=list)


def test_spec_values_keep_their_fields_and_defaults():
    t = ConnTuple(A, B, 17, 5060, 5062)
    assert (t.src, t.dst, t.proto, t.sport, t.dport) == (A, B, 17, 5060, 5062)
    assert t.reply() == ConnTuple(B, A, 17, 5062, 5060) and t < t.reply()
    assert ExpectTuple(4, 17, None, B, 4000).sport is None
    assert Expectation(ExpectTuple(4, 17, None, B, 4000), ExpectClass.AUDIO, ExpectFlag.NONE, t, 3.0).helper == "sip"
    assert Packet(A, 1, B, 2, 17).payload == b""
    result = PacketResult(True, None, (), (), False, False)
    assert result.related_to is None and result.transitions == ()
