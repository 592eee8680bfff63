"""
pbd's Banana decoder against Twisted's: the same items from the same bytes,
however they are chunked, and the same refusals of the same garbage.
"""

from __future__ import annotations

import random

import pytest
from twisted.spread import banana, jelly

from pbd.banana import FastDecoding

# Every test runs with the compiled codec and with the pure-Python one.
pytestmark = pytest.mark.usefixtures("codec")


class Recorder:
    """Collects what a decoder makes of its input, or the exception it raised."""

    def __init__(self) -> None:
        self.items: list = []

    def expressionReceived(self, item):
        self.items.append(item)


class Stock(Recorder, banana.Banana):
    def __init__(self, dialect=b"pb"):
        banana.Banana.__init__(self)
        Recorder.__init__(self)
        self.currentDialect = dialect
        self.setPrefixLimit(banana._PREFIX_LIMIT)


class Fast(FastDecoding, Stock):
    pass


def decode(decoder_class, data: bytes, cuts: list[int], dialect=b"pb"):
    decoder = decoder_class(dialect)
    previous = 0
    try:
        for cut in [*cuts, len(data)]:
            decoder.dataReceived(data[previous:cut])
            previous = cut
    except Exception as e:
        return decoder.items, type(e).__name__
    return decoder.items, leftover(decoder)


def leftover(decoder) -> bytes:
    """What a decoder holds back for later: pbd's may keep it in pieces."""
    stash = getattr(decoder, "_stash", None)
    return b"".join(stash) if stash else decoder.buffer


def encode(value) -> bytes:
    encoder = banana.Banana()
    encoder.currentDialect = b"pb"
    encoder.setPrefixLimit(banana._PREFIX_LIMIT)
    out: list[bytes] = []
    encoder.transport = type("T", (), {"write": lambda self, data: out.append(data)})()
    encoder.sendEncoded(jelly.jelly(value))
    return b"".join(out)


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "big", "neg", "float", "str", "bytes", "none"]
    if depth < 4:
        kinds += ["list", "dict", "tuple"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-1000, 1000)
    if kind == "big":
        return rng.choice([1, -1]) * rng.randint(2**31, 2**200)
    if kind == "neg":
        return -rng.randint(1, 2**31)
    if kind == "float":
        return rng.uniform(-1e9, 1e9)
    if kind == "str":
        return "".join(rng.choice("abcé, ñ=💡") for _ in range(rng.randint(0, 40)))
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 300))
    if kind == "none":
        return None
    children = [random_value(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    if kind == "list":
        return children
    if kind == "tuple":
        return tuple(children)
    return {f"k{i}": child for i, child in enumerate(children)}


def random_cuts(rng: random.Random, length: int) -> list[int]:
    return sorted(rng.sample(range(length), min(length, rng.randint(0, 8)))) if length else []


def test_valid_messages_decode_the_same_in_any_chunks():
    rng = random.Random(20261125)
    for _ in range(400):
        data = b"".join(encode(random_value(rng)) for _ in range(rng.randint(1, 4)))
        cuts = random_cuts(rng, len(data))
        assert decode(Fast, data, cuts) == decode(Stock, data, cuts)


def test_vocabulary_of_the_pb_dialect():
    data = b"\x01\x87\x02\x87" + encode("after")
    assert decode(Fast, data, [1, 3]) == decode(Stock, data, [1, 3])
    assert decode(Fast, data, [], dialect=b"none") == decode(Stock, data, [], dialect=b"none")


@pytest.mark.parametrize(
    "data",
    [
        b"\x01" * 65,  # a prefix longer than the limit, no type byte yet
        b"\x01" * 64,  # as long as allowed: wait for more
        b"\x01" * 70 + b"\x81",  # too long a prefix, then a type byte
        b"\x7f\x7f\x7f\x7f\x82",  # a string far over the size limit
        b"\x7f\x7f\x7f\x7f\x80",  # a list far over the size limit
        b"\x01\x88",  # an unknown type byte
        b"\x7f\x7f\x87",  # vocabulary that does not exist
        b"\x84\x00\x00",  # half a float
        b"\x05\x82abc",  # half a string
        b"\x05" + b"\x00" * 9 + b"\x82hello",  # a length of 10 digits, high ones zero
        b"\x01" + b"\x00" * 20 + b"\x80\x01\x81",  # a count of 21 digits
        b"\x01" + b"\x00" * 8 + b"\x01\x82",  # a length of 63 bits and more: too long
        b"\x01" + b"\x00" * 12 + b"\x87",  # a vocabulary number of 13 digits
    ],
)
def test_edge_cases_are_treated_alike(data):
    for cuts in ([], [1], list(range(1, len(data)))):
        assert decode(Fast, data, cuts) == decode(Stock, data, cuts)


def test_random_garbage_is_refused_alike():
    rng = random.Random(7)
    # Half pure noise; half built of valid type bytes and small prefixes, to reach deeper.
    plausible = bytes([*range(0, 8), 0x7F, *range(0x80, 0x88)])
    for n in range(4000):
        length = rng.randint(1, 60)
        if n % 2:
            data = rng.randbytes(length)
        else:
            data = bytes(rng.choice(plausible) for _ in range(length))
        cuts = random_cuts(rng, len(data))
        assert decode(Fast, data, cuts) == decode(Stock, data, cuts), data


def test_a_long_string_in_small_pieces():
    data = encode(["x" * 200_000, b"y" * 70_000, "after"])
    cuts = list(range(0, len(data), 1000))[1:]
    assert decode(Fast, data, cuts) == decode(Stock, data, cuts)
    # and stopped half way, the leftover is the same
    half = [cut for cut in cuts if cut < len(data) // 2]
    assert decode(Fast, data[: len(data) // 2], half) == decode(Stock, data[: len(data) // 2], half)


def test_bounds_past_any_count_are_no_bounds():
    """A configured bound too large for a C integer decodes as no bound does."""
    decoder = Fast()
    decoder.maxNesting, decoder.maxMessageItems, decoder.maxMessageBytes = 2**70, 2**80, 2**90
    decoder.dataReceived(b"\x01\x80\x05\x82hello")
    assert decoder.items == [[b"hello"]]
