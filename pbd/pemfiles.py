"""
PEM files of certificates and keys, read and checked with a reason a person can act on.

The daemon's C{tls:} blocks and the client's C{--ca}/C{--cert}/C{--key}
read the same kinds of file; both say what is wrong in the same words
(never OpenSSL's error tuples), each naming the file its own way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = [
    "PEMFileError",
    "certificates_in",
    "kinds",
    "private_key_in",
    "read_pem_blocks",
    "same_public_key",
]

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


class PEMFileError(Exception):
    """What is wrong with a PEM file, said after its name (C{"is a folder, not a PEM file"})."""


def read_pem_blocks(path: Path | str) -> list[tuple[str, bytes]]:
    """The file's PEM blocks, each as (its label, its text)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PEMFileError("no such file") from None
    except IsADirectoryError:
        raise PEMFileError("is a folder, not a PEM file") from None
    except OSError as e:
        raise PEMFileError(f"cannot be read: {e.strerror}") from None
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise PEMFileError("is not a PEM file (no -----BEGIN ...----- line)")
    return blocks


def kinds(blocks: list[tuple[str, bytes]]) -> str:
    """The labels of C{blocks}, for a message: C{"CERTIFICATE, PRIVATE KEY"}."""
    return ", ".join(dict.fromkeys(label for label, _ in blocks))


def certificates_in(blocks: list[tuple[str, bytes]]) -> list[x509.Certificate]:
    """Every certificate among C{blocks}, in order; at least one."""
    pems = [pem for label, pem in blocks if label == "CERTIFICATE"]
    if not pems:
        raise PEMFileError(f"holds no certificate (found: {kinds(blocks)})")
    try:
        return [x509.load_pem_x509_certificate(pem) for pem in pems]
    except ValueError as e:
        raise PEMFileError(f"its certificate cannot be read: {e}") from None


def private_key_in(blocks: list[tuple[str, bytes]]) -> Any:
    """The first private key among C{blocks}, or L{None} if there is none."""
    pems = [pem for label, pem in blocks if label.endswith("PRIVATE KEY")]
    if not pems:
        return None
    try:
        return serialization.load_pem_private_key(pems[0], password=None)
    except TypeError:
        # Never let OpenSSL ask for a passphrase on a terminal, or a daemon hang on one.
        raise PEMFileError(
            "the private key is encrypted: give a key without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise PEMFileError(f"its private key cannot be read: {e}") from None


def same_public_key(certificate: x509.Certificate, private: Any) -> bool:
    """Whether C{private} is the key of C{certificate}."""

    def spki(public: Any) -> bytes:
        return bytes(
            public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    return spki(certificate.public_key()) == spki(private.public_key())
