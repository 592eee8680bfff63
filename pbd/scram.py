"""
SCRAM-SHA-256 (RFC 5802, RFC 7677): the arithmetic and the message formats.

The server stores only a salted verifier (StoredKey, ServerKey), in
PostgreSQL's format, so a stolen password file does not let anyone log in
without first cracking the password. Both sides prove knowledge of the
password to each other; it never crosses the wire.

No channel binding: the client's gs2 header must be C{n,,} or C{y,,}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

NAME = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096  # RFC 7677's minimum and PostgreSQL's default
MINIMUM_ITERATIONS = 4096
# A client refuses more: a hostile server could otherwise freeze it in PBKDF2.
MAXIMUM_ITERATIONS = 1_000_000


class ScramError(ValueError):
    """A malformed message or a failed proof; the message is safe to show the peer."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ScramError("malformed base64") from None


def saslprep(text: str) -> str:
    """
    Prepare a password as RFC 4013 asks: map, normalise (NFKC), refuse
    prohibited characters. Bidirectional checks are left out.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    for c in normalized:
        if (
            stringprep.in_table_c12(c)
            or stringprep.in_table_c21_c22(c)
            or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c)
            or stringprep.in_table_c5(c)
            or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c)
            or stringprep.in_table_c8(c)
            or stringprep.in_table_c9(c)
        ):
            raise ScramError("the password holds a character SASLprep prohibits")
    return normalized


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)


# The client's keys for the (password, salt, iterations) it logged in with
# last (RFC 5802, section 5.1, lets a client keep them): a process that logs
# in again and again skips PBKDF2 after the first time. It holds the password
# already; the cache holds only what is derived from it, for at most
# CLIENT_KEYS_CACHED of them, keyed by an HMAC under a key of this process.
CLIENT_KEYS_CACHED = 64
_cache_key_secret = os.urandom(32)
_client_keys_cache: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
_client_keys_lock = threading.Lock()


def client_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """ClientKey and ServerKey for a login: PBKDF2 only on a miss of the cache."""
    prepared = saslprep(password).encode("utf-8")
    cache_key = hmac.new(
        _cache_key_secret,
        b"%d:%d:" % (iterations, len(salt)) + salt + prepared,
        hashlib.sha256,
    ).digest()
    with _client_keys_lock:
        keys = _client_keys_cache.get(cache_key)
        if keys is not None:
            _client_keys_cache.move_to_end(cache_key)
            return keys
    salted = salted_password(password, salt, iterations)
    keys = (_hmac(salted, b"Client Key"), _hmac(salted, b"Server Key"))
    with _client_keys_lock:
        _client_keys_cache[cache_key] = keys
        while len(_client_keys_cache) > CLIENT_KEYS_CACHED:
            _client_keys_cache.popitem(last=False)
    return keys


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Verifier:
    """What the server stores for one user: never enough to log in with."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
    ) -> Verifier:
        salt = os.urandom(16) if salt is None else salt
        salted = salted_password(password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            iterations, salt, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        )

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Read C{SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>}."""
        try:
            name, parameters, keys = text.split("$")
            iterations_text, salt_text = parameters.split(":")
            stored_text, server_text = keys.split(":")
            iterations = int(iterations_text)
        except ValueError:
            raise ScramError(f"not a {NAME} verifier") from None
        if name != NAME or iterations < 1:
            raise ScramError(f"not a {NAME} verifier")
        stored_key, server_key = _unb64(stored_text), _unb64(server_text)
        if len(stored_key) != 32 or len(server_key) != 32:
            raise ScramError(f"not a {NAME} verifier")
        return cls(iterations, _unb64(salt_text), stored_key, server_key)

    def __str__(self) -> str:
        return (
            f"{NAME}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    def verify_password(self, password: str) -> bool:
        """For logins that send the password itself (over TLS)."""
        try:
            salted = salted_password(password, self.salt, self.iterations)
        except ScramError:
            return False
        client_key = _hmac(salted, b"Client Key")
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key)


def _attributes(message: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        key, equals, value = part.partition("=")
        if len(key) != 1 or not equals:
            raise ScramError(f"malformed SCRAM message part {part[:20]!r}")
        pairs.append((key, value))
    return pairs


def _unescape_name(name: str) -> str:
    parts = name.split("=")
    for part in parts[1:]:
        if not part.startswith(("2C", "3D")):
            raise ScramError("malformed user name")
    return parts[0] + "".join({"2C": ",", "3D": "="}[p[:2]] + p[2:] for p in parts[1:])


def _escape_name(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


@dataclass(frozen=True)
class ClientFirst:
    username: str
    nonce: str
    bare: str
    gs2_header: str

    @classmethod
    def parse(cls, message: str) -> ClientFirst:
        flag, _, rest = message.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag.startswith("p="):
            raise ScramError("channel binding is not supported here")
        if flag not in ("n", "y") or authzid:
            raise ScramError("a client-first message starts with 'n,,'")
        if bare.startswith("m="):
            raise ScramError("mandatory extensions are not supported")
        attributes = _attributes(bare)
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise ScramError("a client-first message is 'n,,n=<user>,r=<nonce>'")
        if not attributes[1][1] or not attributes[0][1]:
            raise ScramError("an empty user name or nonce")
        return cls(_unescape_name(attributes[0][1]), attributes[1][1], bare, f"{flag},,")


class ServerExchange:
    """The server's half of one SCRAM conversation."""

    def __init__(self, client_first: ClientFirst, verifier: Verifier) -> None:
        self.client_first = client_first
        self.verifier = verifier
        self.nonce = client_first.nonce + _b64(os.urandom(18))
        self.server_first = f"r={self.nonce},s={_b64(verifier.salt)},i={verifier.iterations}"

    def finish(self, client_final: str) -> str:
        """
        Check the client's proof and return the server-final message.

        @raise ScramError: for a malformed message or a wrong proof.
        """
        without_proof, _, proof_part = client_final.rpartition(",p=")
        attributes = dict(_attributes(without_proof))
        channel = _b64(self.client_first.gs2_header.encode("ascii"))
        if attributes.get("c") != channel:
            raise ScramError("channel binding data does not match")
        if attributes.get("r") != self.nonce:
            raise ScramError("the nonce does not match")
        proof = _unb64(proof_part)
        auth_message = ",".join((self.client_first.bare, self.server_first, without_proof)).encode(
            "utf-8"
        )
        client_signature = _hmac(self.verifier.stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise ScramError("wrong proof")
        client_key = _xor(proof, client_signature)
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key):
            raise ScramError("wrong proof")
        return f"v={_b64(_hmac(self.verifier.server_key, auth_message))}"


class ClientExchange:
    """The client's half of one SCRAM conversation."""

    def __init__(self, username: str, password: str, nonce: str | None = None) -> None:
        self.username = username
        self.password = password
        self.nonce = nonce or _b64(os.urandom(18))
        self.bare = f"n={_escape_name(username)},r={self.nonce}"
        self.client_first = "n,," + self.bare
        self._server_signature: bytes | None = None

    def final(self, server_first: str) -> str:
        """The client-final message, with the proof, for the server's first message."""
        attributes = dict(_attributes(server_first))
        nonce, salt, iterations = attributes.get("r"), attributes.get("s"), attributes.get("i")
        if nonce is None or salt is None or iterations is None:
            raise ScramError("malformed server-first message")
        if not nonce.startswith(self.nonce) or nonce == self.nonce:
            raise ScramError("the server's nonce does not extend ours")
        if not iterations.isdigit() or int(iterations) < MINIMUM_ITERATIONS:
            raise ScramError(f"the server asks for too few iterations ({iterations})")
        if int(iterations) > MAXIMUM_ITERATIONS:
            raise ScramError(f"the server asks for too many iterations ({iterations})")
        client_key, server_key = client_keys(self.password, _unb64(salt), int(iterations))
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth_message = ",".join((self.bare, server_first, without_proof)).encode("utf-8")
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        self._server_signature = _hmac(server_key, auth_message)
        return f"{without_proof},p={_b64(_xor(client_key, signature))}"

    def verify_server(self, server_final: str) -> None:
        """
        @raise ScramError: unless the server proved it knows our verifier.
        """
        attributes = dict(_attributes(server_final))
        if "e" in attributes:
            raise ScramError(f"the server refused: {attributes['e']}")
        expected = self._server_signature
        if expected is None or not hmac.compare_digest(_unb64(attributes.get("v", "")), expected):
            raise ScramError("the server could not prove it knows the password")
