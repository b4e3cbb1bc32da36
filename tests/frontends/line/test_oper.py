"""The line door's /oper extension: server operators (CHATD_OPERATORS)."""

import pytest

from chatd.config import Config
from tests.support import ChatHarness


@pytest.fixture
def chat() -> ChatHarness:
    """operuser is listed in CHATD_OPERATORS; plainuser is not; two failures lock an account."""
    config = Config(
        bcrypt_rounds=4, rate_limit=None, stored_message_limit=None, room_creation_limit=None,
        operators=("operuser",), login_failures_per_account=2,
    )
    harness = ChatHarness(config)
    for name in ("operuser", "plainuser", "alice", "bob"):
        harness.client().send(f"/register {name} password-{name}")
    return harness


def test_oper_with_a_listed_accounts_password_is_ok_and_kicks_anywhere(chat):
    """bob is refused a kick in alice's room; after /oper operuser ... he kicks her."""
    alice = chat.logged_in("alice", "password-alice")
    bob = chat.logged_in("bob", "password-bob")
    alice.send("/join #dev")
    bob.send("/join #dev")
    assert bob.send("/kick #dev alice")[0].startswith("ERR forbidden")
    assert bob.send("/oper operuser password-operuser") == ["OK oper"]
    lines = bob.send("/kick #dev alice out")
    assert lines[-1] == "OK kick #dev"
    assert "KICK #dev alice bob out" in lines


def test_oper_refusals_bad_credentials_forbidden_too_many_attempts(chat):
    """Wrong password and unknown account: bad-credentials; a listed-less account's right
    password: forbidden; past the account's failure limit: too-many-attempts."""
    bob = chat.logged_in("bob", "password-bob")
    assert bob.send("/oper nosuch password-operuser")[0].startswith("ERR bad-credentials")
    assert bob.send("/oper plainuser password-plainuser")[0].startswith("ERR forbidden")
    assert bob.send("/oper operuser wrong1")[0].startswith("ERR bad-credentials")
    assert bob.send("/oper operuser wrong2")[0].startswith("ERR bad-credentials")
    assert bob.send("/oper operuser password-operuser")[0].startswith("ERR too-many-attempts")
    assert not chat.chat.users["bob"].oper


def test_oper_is_in_help_and_needs_both_arguments(chat):
    """/help lists /oper; /oper with one argument is bad-arguments."""
    bob = chat.logged_in("bob", "password-bob")
    assert any("/oper" in line for line in bob.send("/help"))
    assert bob.send("/oper operuser")[0].startswith("ERR bad-arguments")
