"""Cluster-secret authentication over Tauth/afid: who gets in, and what crosses the wire."""

from __future__ import annotations

import logging

import pytest

from brasil.ninep.auth import (
    AuthFile,
    AuthHandle,
    SecretAuthenticator,
    SecretError,
    client_auth,
    load_secret,
)
from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from fixtures import FixtureTree, serving

SECRET = b"correct horse battery staple 42"


async def test_the_right_secret_attaches_and_never_crosses_the_wire(caplog):
    caplog.set_level(logging.INFO, logger="brasil.ninep.trace")
    tree = FixtureTree()
    async with serving(tree.root, authenticator=SecretAuthenticator(SECRET), trace=True) as (_, a):
        c = await Client.connect(a, auth=client_auth(SECRET))
        assert await c.read("hello") == b"hello, world\n"
        await c.close()
    trace = "\n".join(r.getMessage() for r in caplog.records)
    assert "Tauth" in trace and "brasil-hmac-sha256" in trace  # the exchange really happened
    assert SECRET.decode() not in trace and SECRET.hex() not in trace


async def test_a_wrong_secret_is_refused_and_logged(caplog):
    tree = FixtureTree()
    async with serving(tree.root, authenticator=SecretAuthenticator(SECRET)) as (_, a):
        with pytest.raises(NinepError, match="authentication failed"):
            await Client.connect(a, auth=client_auth(b"not the secret, not at all"))
    assert any("wrong secret" in r.getMessage() for r in caplog.records)


async def test_no_secret_cannot_attach():
    tree = FixtureTree()
    async with serving(tree.root, authenticator=SecretAuthenticator(SECRET)) as (_, a):
        with pytest.raises(NinepError, match="authentication failed"):
            await Client.connect(a)


async def test_a_server_without_the_secret_is_detected_by_the_client():
    """Mutual: a fake server that accepts any answer cannot forge its proof."""
    class Forger(AuthHandle):
        def write(self, offset: int, data: bytes) -> int:
            self.node.ok, self.node.proof = True, "0" * 64
            return len(data)

    class FakeFile(AuthFile):
        def open(self, mode: int) -> AuthHandle:
            return Forger(self)

    class Fake(SecretAuthenticator):
        def auth_node(self, uname, aname, peer="?"):
            return FakeFile(b"", uname, aname, peer)

    tree = FixtureTree()
    async with serving(tree.root, authenticator=Fake(b"")) as (_, a):
        with pytest.raises(NinepError, match="could not prove it knows the cluster secret"):
            await Client.connect(a, auth=client_auth(SECRET))


def test_secret_files_must_hold_enough_bytes(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(SecretError, match="at least 16 bytes"):
        load_secret(str(short))
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    good.chmod(0o600)
    assert load_secret(str(good)) == SECRET
    with pytest.raises(SecretError, match="No such file"):
        load_secret(str(tmp_path / "missing"))


def test_a_secret_others_can_read_or_reach_through_a_link_is_refused(tmp_path):
    """Issue 7 §1: a secret others can read is theirs too; a link may be someone else's file."""
    open_ = tmp_path / "open"
    open_.write_bytes(SECRET + b"\n")
    open_.chmod(0o644)
    with pytest.raises(SecretError, match="open to others.*chmod 600"):
        load_secret(str(open_))
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    good.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(SecretError, match="symbolic link"):
        load_secret(str(link))
