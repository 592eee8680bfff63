"""
pbd's codec against Twisted's, on values and bytes hypothesis makes up.

The same values give the same bytes (L{pbd.encoder}) and the same
s-expressions (L{pbd.plainjelly}); the same bytes give the same items,
leftover or error (L{pbd.banana}) however they are split, down to one byte
at a time, truncated or with oversized lengths; the same s-expressions give
the same values or the same error.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.spread import banana, jelly, pb

from pbd.banana import FastDecoding
from pbd.encoder import FastEncoding
from pbd.plainjelly import PlainJelly

# Every test runs with the compiled codec and with the pure-Python one.
pytestmark = pytest.mark.usefixtures("codec")

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG_LIMIT = 2 ** (banana._PREFIX_LIMIT * 7) - 1
VOCABULARY = list(pb.Broker.outgoingVocabulary)


# -- encoding


class _Written:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.pieces.append(data)


class StockBanana(banana.Banana):
    def __init__(self, dialect: bytes | None) -> None:
        super().__init__()
        self.currentDialect = dialect
        self.setPrefixLimit(banana._PREFIX_LIMIT)
        self.transport = _Written()
        self.outgoingSymbols = pb.Broker.outgoingVocabulary


class FastBanana(FastEncoding, StockBanana):
    pass


def encoded(encoder_class: type, value: Any, dialect: bytes | None = b"pb") -> Any:
    """The bytes an encoder writes for C{value}, or the error it raises (and what it wrote)."""
    encoder = encoder_class(dialect)
    try:
        encoder.sendEncoded(value)
    except Exception as e:
        return type(e), str(e), encoder.transport.pieces
    return b"".join(encoder.transport.pieces)


def banana_atoms() -> st.SearchStrategy:
    edges = st.sampled_from(
        [
            *(0, 127, 128, 4095, 4096, 2**14 - 1, 2**14, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1),
            *(LONG_LIMIT, -LONG_LIMIT, LONG_LIMIT + 1, -LONG_LIMIT - 1, True, False),
        ]
    )
    return st.one_of(
        st.integers(min_value=-(2**460), max_value=2**460),
        edges,
        st.floats(allow_nan=True),
        st.binary(max_size=300),
        st.sampled_from(VOCABULARY),
    )


sexps = st.recursive(
    banana_atoms(),
    lambda children: st.lists(children, max_size=6) | st.tuples(children, children),
    max_leaves=40,
)


@SETTINGS
@given(sexps, st.sampled_from([b"pb", b"none"]))
def test_the_same_values_encode_to_the_same_bytes(value, dialect):
    assert encoded(FastBanana, value, dialect) == encoded(StockBanana, value, dialect)


@pytest.mark.parametrize(
    "value",
    [
        "text",  # not a Banana type
        [1, 2, {"a": 1}],
        [b"x", object()],
        b"x" * (banana.SIZE_LIMIT + 1),
        [0] * (banana.SIZE_LIMIT + 1),
        LONG_LIMIT + 1,
        -LONG_LIMIT - 1,
    ],
    ids=["str", "dict", "object", "long-bytes", "long-list", "big-int", "big-negative"],
)
def test_what_cannot_be_sent_is_refused_alike_and_nothing_is_written(value):
    fast, stock = encoded(FastBanana, value), encoded(StockBanana, value)
    assert fast == stock
    assert fast[2] == []


def test_the_shared_bounds_are_twisteds_and_a_program_may_set_its_own():
    fast, stock = FastBanana(b"pb"), StockBanana(b"pb")
    names = ("prefixLimit", "_smallestLongInt", "_smallestInt", "_largestInt", "_largestLongInt")
    assert [getattr(fast, n) for n in names] == [getattr(stock, n) for n in names]
    assert "_largestLongInt" not in vars(fast)  # shared, not one per connection
    assert fast.outgoingSymbols == stock.outgoingSymbols
    fast.setPrefixLimit(3)
    stock.setPrefixLimit(3)
    assert [getattr(fast, n) for n in names] == [getattr(stock, n) for n in names]
    assert encoded(FastBanana, 2**30) == encoded(StockBanana, 2**30)


def test_subclasses_encode_as_their_base_types():
    class Number(int):
        pass

    class Name(bytes):
        pass

    value = [Number(5), Name(b"list"), Name(b"abc"), (1, 2.5)]
    assert encoded(FastBanana, value) == encoded(StockBanana, value)


# -- decoding


class Recorder:
    def __init__(self, dialect: bytes = b"pb") -> None:
        banana.Banana.__init__(self)  # type: ignore[arg-type]
        self.items: list = []
        self.currentDialect = dialect
        self.setPrefixLimit(banana._PREFIX_LIMIT)  # type: ignore[attr-defined]

    def expressionReceived(self, item: Any) -> None:
        self.items.append(item)


class StockDecoder(Recorder, banana.Banana):
    pass


class FastDecoder(FastDecoding, StockDecoder):
    pass


def splits(draw: Any, data: bytes, most: int) -> list[int]:
    """Where to cut C{data}: never empty pieces, which no transport delivers."""
    if len(data) < 2:
        return []
    return sorted(draw.draw(st.sets(st.integers(1, len(data) - 1), max_size=most)))


def decoded(decoder_class: type, data: bytes, cuts: list[int]) -> Any:
    """Items, then the leftover or the error's type and text."""
    decoder = decoder_class()
    previous = 0
    try:
        for cut in [*cuts, len(data)]:
            decoder.dataReceived(data[previous:cut])
            previous = cut
    except Exception as e:
        return comparable(decoder.items), type(e).__name__, str(e)
    stash = getattr(decoder, "_stash", None)
    return comparable(decoder.items), b"".join(stash) if stash else decoder.buffer


def comparable(value: Any) -> Any:
    """The value with its exact types spelled out (and NaN equal to itself)."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, [comparable(v) for v in value])
    if isinstance(value, set | frozenset):
        return (type(value).__name__, sorted(map(repr, value)))
    if isinstance(value, dict):
        return ("dict", [(comparable(k), comparable(v)) for k, v in value.items()])
    if isinstance(value, float):
        return ("float", struct.pack("!d", value) if not math.isnan(value) else "nan")
    if value is None or isinstance(value, int | bytes | str):
        return (type(value).__name__, value)
    return (type(value).__name__,)  # Jelly's placeholders: compared by kind


valid_messages = (
    st.lists(sexps, max_size=6)
    .map(lambda value: encoded(StockBanana, value))
    .filter(lambda result: isinstance(result, bytes))
)
valid_streams = st.lists(valid_messages, min_size=1, max_size=4).map(b"".join)


@SETTINGS
@given(valid_streams, st.data())
def test_the_same_bytes_decode_alike_however_split(data, draw):
    cuts = splits(draw, data, 10)
    assert decoded(FastDecoder, data, cuts) == decoded(StockDecoder, data, cuts)


@settings(max_examples=60, deadline=None)
@given(valid_streams)
def test_one_byte_at_a_time_and_every_truncation(data):
    every_byte = list(range(1, len(data)))
    assert decoded(FastDecoder, data, every_byte) == decoded(StockDecoder, data, every_byte)
    for end in range(len(data)):
        assert decoded(FastDecoder, data[:end], []) == decoded(StockDecoder, data[:end], [])


def _b128(number: int) -> bytes:
    pieces: list[bytes] = []
    banana.int2b128(number, pieces.append)
    return b"".join(pieces)


@SETTINGS
@given(
    st.integers(0, 2**460),
    st.sampled_from(range(0x80, 0x89)),
    st.binary(max_size=40),
    st.data(),
)
def test_oversized_lengths_and_garbage_are_refused_alike(number, type_byte, tail, draw):
    data = _b128(number) + bytes([type_byte]) + tail
    cuts = splits(draw, data, 4)
    assert decoded(FastDecoder, data, cuts) == decoded(StockDecoder, data, cuts)


@SETTINGS
@given(st.binary(max_size=80))
def test_random_bytes_are_treated_alike(data):
    assert decoded(FastDecoder, data, []) == decoded(StockDecoder, data, [])
    assert decoded(FastDecoder, data, list(range(1, len(data)))) == decoded(
        StockDecoder, data, list(range(1, len(data)))
    )


# -- jelly and unjelly


class StockBroker(pb.Broker):
    pass


class FastBroker(PlainJelly, pb.Broker):
    pass


def brokers(security: Any = None) -> tuple[pb.Broker, pb.Broker]:
    security = jelly.globalSecurity if security is None else security
    return FastBroker(security=security), StockBroker(security=security)


def outcome(function: Any, *args: Any) -> Any:
    try:
        return comparable(function(*args))
    except Exception as e:
        return type(e).__name__, str(e)


hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=3).map(tuple),
    max_leaves=6,
)
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**460), max_value=2**460)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.sampled_from(VOCABULARY),
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(hashables, children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def values_with_sharing(draw: Any) -> Any:
    """Plain values, some of which hold one container twice, or themselves."""
    value = draw(plain_values)
    how = draw(st.sampled_from(["plain", "shared", "cycle", "other"]))
    if how == "shared":
        inner = draw(st.lists(plain_values, max_size=3))
        return [value, inner, {"again": inner}]
    if how == "cycle":
        outer: list = [value]
        outer.append(outer)
        return outer
    if how == "other":
        return [value, draw(st.sampled_from([{1, 2}, frozenset({3}), ("t", 1.5, None)]))]
    return value


@SETTINGS
@given(values_with_sharing())
def test_the_same_values_jelly_alike(value):
    fast, stock = brokers()
    assert outcome(fast.serialize, value) == outcome(stock.serialize, value)


@SETTINGS
@given(values_with_sharing())
def test_jellied_values_unjelly_alike(value):
    fast, stock = brokers()
    sexp = stock.serialize(value)
    if "cycle" not in repr(sexp) and "[...]" not in repr(value):
        assert outcome(fast.unserialize, sexp) == outcome(stock.unserialize, sexp)


jelly_tags = st.sampled_from(
    [
        *(b"unicode", b"list", b"tuple", b"dictionary", b"None", b"boolean", b"reference"),
        *(b"dereference", b"set", b"class", b"true", b"false", b"module", "unicode", 3),
    ]
)
made_up_sexps = st.recursive(
    st.integers(-5, 5) | st.binary(max_size=6) | st.floats() | jelly_tags,
    lambda children: (
        st.tuples(jelly_tags, st.lists(children, max_size=4)).map(lambda pair: [pair[0], *pair[1]])
        | st.lists(children, max_size=3)
    ),
    max_leaves=20,
)


@SETTINGS
@given(made_up_sexps)
def test_made_up_sexps_unjelly_alike_or_fail_alike(sexp):
    fast, stock = brokers()
    assert outcome(fast.unserialize, sexp) == outcome(stock.unserialize, sexp)


def test_security_options_that_allow_less_are_obeyed():
    strict = jelly.SecurityOptions()  # the basic types (list, tuple, dictionary) not allowed
    fast, stock = brokers(strict)
    for sexp in ([b"list", 1], [b"tuple"], [b"dictionary", [1, 2]]):
        assert outcome(fast.unserialize, sexp) == outcome(stock.unserialize, sexp)
        assert outcome(fast.unserialize, sexp)[0] == "InsecureJelly"


def test_other_kinds_of_security_options_go_through_jelly():
    class NoLists(jelly.SecurityOptions):
        def isTypeAllowed(self, typeName: Any) -> bool:
            return typeName != b"list" and super().isTypeAllowed(typeName)

    options = NoLists()
    options.allowBasicTypes()
    fast, stock = brokers(options)
    assert outcome(fast.unserialize, [b"list", 1]) == ("InsecureJelly", "b'list'")
    assert outcome(stock.unserialize, [b"list", 1]) == ("InsecureJelly", "b'list'")


def test_a_registered_unjellier_for_a_plain_tag_is_used(monkeypatch):
    monkeypatch.setitem(jelly.unjellyableFactoryRegistry, b"tuple", lambda state: ("made", state))
    fast, stock = brokers()
    sexp = [b"tuple", 7]
    assert outcome(fast.unserialize, sexp) == outcome(stock.unserialize, sexp)
    assert fast.unserialize(sexp) == ("made", 7)


def test_a_value_changed_while_it_is_jellied_is_not_read_after_it_is_freed(codec):
    """
    Jellying allocates, an allocation may run a collection, and a finalizer
    may change the very list or dict being jellied (realm code shares it
    with another thread, say): the compiled codec re-reads it and leaves a
    changed one to Jelly. (It read the freed array before: a crash, or
    garbage, as the freed memory happened to be.)
    """
    import gc

    import pbd.plainjelly

    compiled = pbd.plainjelly.accelerator
    if compiled is None:
        pytest.skip("the pure-Python codec iterates as Python does")
    for shared in ([[str(i) * 3] for i in range(20000)], {str(i): [str(i)] for i in range(20000)}):
        changed: list[bool] = []

        class ChangesIt:
            def __del__(self, shared: Any = shared, changed: list = changed) -> None:
                shared.clear()
                if isinstance(shared, list):
                    shared.extend([b"x" * 50] * 10)  # a smaller array: the old one is freed
                changed.append(True)

        def make_garbage() -> None:
            garbage = ChangesIt()
            garbage.cycle = [garbage]  # type: ignore[attr-defined]  # freed by a collection

        threshold = gc.get_threshold()
        gc.collect()
        gc.set_threshold(100)
        try:
            make_garbage()
            sexp = compiled.jelly_plain(shared)
        finally:
            gc.set_threshold(*threshold)
        assert changed, "the finalizer did not run"
        assert sexp is compiled.NOT_PLAIN  # changed under it: Jelly's to do
