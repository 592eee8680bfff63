"""
Password files: one C{user:hash} per line.

Hashes are SCRAM-SHA-256 verifiers (PostgreSQL's format, pbd's default) or
in passlib's formats. PB's stock login is an MD5 challenge/response, which
a server can only check against the plain password or its unsalted MD5:
only C{hex_md5} and C{ldap_md5} can answer it. A SCRAM verifier serves the
C{scram-sha-256} and C{plain} mechanisms; the other strong hashes (argon2,
bcrypt, sha512_crypt, pbkdf2) serve C{plain}.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from passlib.context import CryptContext

from pbd.scram import Verifier

SCHEMES = (
    "argon2",
    "bcrypt",
    "bcrypt_sha256",
    "sha512_crypt",
    "sha256_crypt",
    "pbkdf2_sha256",
    "pbkdf2_sha512",
    "scram",
    "ldap_md5",
    "hex_md5",
)
MD5_CAPABLE_SCHEMES = frozenset({"hex_md5", "ldap_md5"})
SCRAM_SCHEME = "scram-sha-256"

DEFAULT_SCHEME = SCRAM_SCHEME
# Schemes `pbd passwd --scheme` can write. hex_md5 exists only for stock PB
# clients' MD5 login, and is as good as the password to an attacker.
WRITABLE_SCHEMES = (SCRAM_SCHEME, "argon2", "bcrypt", "sha512_crypt", "pbkdf2_sha256", "hex_md5")

hashes = CryptContext(schemes=list(SCHEMES))


class UnusablePasswordError(ValueError):
    """A scheme that is unknown, or cannot store this password."""


def hash_password(password: str, scheme: str = DEFAULT_SCHEME) -> str:
    """Hash a password for a password file line."""
    if scheme not in WRITABLE_SCHEMES:
        raise UnusablePasswordError(
            f"unknown scheme {scheme!r} (choose from: {', '.join(WRITABLE_SCHEMES)})"
        )
    try:
        if scheme == SCRAM_SCHEME:
            return str(Verifier.from_password(password))
        return hashes.handler(scheme).hash(password)
    except ValueError as e:
        raise UnusablePasswordError(f"{scheme} cannot store this password: {e}") from None


class PasswordFileError(ValueError):
    """A password file line is malformed; nothing in the file is guessed at."""

    def __init__(self, line_number: int, message: str) -> None:
        super().__init__(f"line {line_number}: {message}")
        self.line_number = line_number


@dataclass(frozen=True)
class PasswordEntry:
    """
    One user's stored hash. What logins need of it (its MD5, its SCRAM
    verifier) is parsed once, here: a malformed hash fails when the file
    is read, not at login time.

    @raise ValueError: the hash is malformed for its scheme.
    """

    user: str
    hash: str
    scheme: str
    md5_digest: bytes | None = field(init=False, repr=False, compare=False)
    scram_verifier: Verifier | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        verifier = Verifier.parse(self.hash) if self.scheme == SCRAM_SCHEME else None
        object.__setattr__(self, "md5_digest", _md5_digest(self.scheme, self.hash))
        object.__setattr__(self, "scram_verifier", verifier)

    @property
    def plain_only(self) -> bool:
        """
        Can this user log in only by sending the password (C{plain}, which
        pbd accepts only over TLS)? Neither SCRAM nor PB's MD5 challenge
        can be answered from this hash: a C{pbd passwd} user of the default
        scheme is not such a user.
        """
        return self.scheme != SCRAM_SCHEME and self.scheme not in MD5_CAPABLE_SCHEMES

    def verify_plain(self, password: str) -> bool:
        """Check a password sent in full (slow by design: call it off the reactor thread)."""
        verifier = self.scram_verifier
        if verifier is not None:
            return verifier.verify_password(password)
        try:
            return hashes.handler(self.scheme).verify(password, self.hash)
        except (ValueError, TypeError):
            # bcrypt refuses passwords over 72 bytes or with NUL bytes: no match.
            return False


def _md5_digest(scheme: str, hashed: str) -> bytes | None:
    """The password's MD5, which PB's challenge needs, if this hash holds it."""
    if scheme == "hex_md5":
        digest = bytes.fromhex(hashed)
    elif scheme == "ldap_md5":
        digest = base64.b64decode(hashed[len("{MD5}") :], validate=True)
    else:
        return None
    if len(digest) != 16:
        raise ValueError("an MD5 is 16 bytes")
    return digest


def parse_password_file(text: str) -> dict[str, PasswordEntry]:
    """
    Parse a password file's text; blank lines and C{#} comments are skipped.

    @raise PasswordFileError: naming the first malformed line.
    """
    entries: dict[str, PasswordEntry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, separator, hashed = line.partition(":")
        if not separator or not user or not hashed:
            raise PasswordFileError(number, "expected 'user:hash'")
        if user in entries:
            raise PasswordFileError(number, f"user {user!r} appears twice")
        try:
            entries[user] = password_entry(user, hashed)
        except ValueError as e:
            raise PasswordFileError(number, str(e)) from None
    return entries


def password_entry(user: str, hashed: str) -> PasswordEntry:
    """
    One user's entry, its hash checked now rather than at login time (a
    password file's line, a user store's row).

    @raise ValueError: saying what is wrong with the hash.
    """
    scheme = identify(hashed)
    if scheme is None:
        known = ", ".join((SCRAM_SCHEME, *SCHEMES))
        raise ValueError(f"hash for {user!r} is in no known format (known: {known})")
    try:
        return PasswordEntry(user, hashed, scheme)
    except (ValueError, binascii.Error):
        raise ValueError(f"malformed {scheme} hash for {user!r}") from None


def identify(hashed: str) -> str | None:
    """The scheme of a stored hash, or L{None} if it is in no known format."""
    if hashed.startswith("SCRAM-SHA-256$"):
        return SCRAM_SCHEME
    return hashes.identify(hashed)


# Far more than any real password file; a bigger one is refused unread.
MAX_FILE_BYTES = 64 * 1024 * 1024


def read_password_file(path: Path) -> dict[str, PasswordEntry]:
    """
    Read and parse a password file: a regular file, never a FIFO or a
    device that could block the reader forever.

    @raise OSError: when it cannot be read, or is not a regular file.
    @raise PasswordFileError: when a line is malformed.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if status.st_size > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES} bytes", str(path))
        data = handle.read(MAX_FILE_BYTES + 1)
    return parse_password_file(data.decode("utf-8"))
