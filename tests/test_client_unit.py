"""URLs and the choice of mechanism in pbd.client."""

from __future__ import annotations

import re

import pytest

from pbd.client import NoUsableMechanismError, Target, URLError, choose_mechanism, parse_url

ALL = ["tls-client-cert", "scram-sha-256", "plain", "pb-md5", "anonymous"]


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("pb://localhost", Target("pb", None, "localhost", 8787, None, None)),
        (
            "pb://alice@example.com:9000/echo",
            Target("pb", "alice", "example.com", 9000, None, "echo"),
        ),
        ("pbs://al%40ice@[::1]/chat/", Target("pbs", "al@ice", "::1", 8787, None, "chat")),
        (
            "pb+unix:///run/pbd.sock#echo",
            Target("pb+unix", None, None, None, "/run/pbd.sock", "echo"),
        ),
        (
            "pb+unix://bob@/run/pbd.sock",
            Target("pb+unix", "bob", None, None, "/run/pbd.sock", None),
        ),
    ],
)
def test_urls(url, target):
    assert parse_url(url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost", "the scheme must be one of"),
        ("pb://alice:secret@localhost", "put no password in a URL"),
        ("pb://localhost:99999", "the port is not a number"),
        ("pb:///echo", "no host"),
        ("pb://localhost/a/b", "the path names one portal"),
        ("pb+unix://host/x.sock", "write pb+unix:///path"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(URLError, match=re.escape(message)):
        parse_url(url)


def choose(offered=ALL, tls=False, user="alice", password="pw", certificate=False):
    return choose_mechanism(offered, tls=tls, user=user, password=password, certificate=certificate)


def test_the_strongest_usable_mechanism_wins():
    assert choose(tls=True, certificate=True) == "tls-client-cert"
    assert choose(tls=False, certificate=True) == "scram-sha-256"
    assert choose() == "scram-sha-256"
    assert choose(["plain", "pb-md5"], tls=True) == "plain"
    assert choose(["plain", "pb-md5"], tls=False) == "pb-md5"
    assert choose(user=None, password=None) == "anonymous"


def test_nothing_fits_says_what_was_offered_and_why():
    with pytest.raises(NoUsableMechanismError) as raised:
        choose(["plain"], tls=False)
    assert str(raised.value) == (
        "the server offers plain; plain would send the password in the clear"
    )
    with pytest.raises(NoUsableMechanismError, match="scram-sha-256 needs a password"):
        choose(["scram-sha-256"], password=None)
    with pytest.raises(NoUsableMechanismError, match="anonymous is for URLs without a user"):
        choose(["anonymous"])
