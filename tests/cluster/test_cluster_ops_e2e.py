"""Cluster mode end to end: server operators and guests across real nodes.

Real ``twistd`` nodes on one fresh database of the private PostgreSQL and
the private redis-server (the ``cluster`` fixture of
``test_cluster_e2e.py``), with the IRC door on. Clients are plain sockets,
every read bounded by the client's timeout. A state another node must
know of (a user's operator status rides its presence state) is waited for
by a direct message sent after it on the same node: both go out on that
node's one Redis connection, in order, so once the DM arrives the state
has too. Each wait's time is printed (``-s`` shows it); none is asserted.
"""

import time

from tests.cluster.test_cluster_e2e import cluster  # noqa: F401 (a fixture)
from tests.cluster.test_cluster_modes_e2e import IRC_ON, irc_login, mode_told
from tests.cluster.test_cluster_who_e2e import read_until
from tests.frontends.irc.support import IRCSocketClient

OPERS = {"CHATD_OPERATORS": "operuser", **IRC_ON}


def dm_reaches(sender: IRCSocketClient, recipient: IRCSocketClient, nick: str, text: str,
               started: float) -> None:
    """``sender`` sends ``nick`` (the recipient) ``text``; wait until it arrives. Prints how
    long after ``started`` it came: an upper bound on when what ``sender``'s node told
    before it reached the recipient's node."""
    sender.send(f"PRIVMSG {nick} :{text}")
    recipient.until(lambda m: m.verb == "PRIVMSG" and m.params[-1] == text)
    print(f"{text}: on the other node at most {time.monotonic() - started:.3f} s after")


def who_flags(client: IRCSocketClient, nick: str) -> str:
    """The flags (``H``, ``G``, with ``*`` for a server operator) of ``WHO <nick>``'s 352."""
    client.send(f"WHO {nick}")
    lines = client.until(lambda m: m.verb == "315")
    replies = [line.split(" ") for line in lines if line.split(" ")[1] == "352"]
    assert len(replies) == 1, lines
    return replies[0][8]


def whois_numerics(client: IRCSocketClient, nick: str) -> list[str]:
    """The numerics ``WHOIS <nick>`` answers with, up to its 318."""
    client.send(f"WHOIS {nick}")
    return [line.split(" ")[1] for line in client.until(lambda m: m.verb == "318")]


def test_a_server_operator_on_one_node_is_known_on_the_other(cluster):  # noqa: F811
    """alice OPERs on node a: bob's WHO on node b shows her ``*`` and his WHOIS 313, though
    b has a session of hers that is no operator (the status is the sessions' of node a:
    that one may not kick where she is no room operator). Her KICK from node a, in a
    room bob opened, is checked on a and takes bob out on b. After ``MODE alice -o``
    b shows her without ``*`` and 313."""
    first, second = cluster("a", **OPERS), cluster("b", **OPERS)
    registrar = first.connect()
    assert registrar.command("/register operuser operpassword") == ["OK register operuser"]
    for node, name in ((first, "alice"), (second, "bob")):
        node.connect().login(name)
    alice, bob = irc_login(first.irc_port, "alice"), irc_login(second.irc_port, "bob")
    alice_there = second.connect()
    alice_there.login("alice")
    dm_reaches(alice, bob, "bob", "before", time.monotonic())
    assert "*" not in who_flags(bob, "alice")
    assert "313" not in whois_numerics(bob, "alice")

    started = time.monotonic()
    alice.send("OPER operuser operpassword")
    alice.until(lambda m: m.verb == "381")
    dm_reaches(alice, bob, "bob", "opered", started)
    assert who_flags(bob, "alice") == "H*"
    assert "313" in whois_numerics(bob, "alice")
    assert who_flags(alice, "alice") == "H*"

    bob.send("JOIN #den")
    bob.until(lambda m: m.verb == "366")
    assert alice_there.command("/join #den")[-1] == "OK join #den"
    # Her join on node b is her user's: her IRC session on a is in #den too.
    alice.until(lambda m: m.verb == "JOIN" and m.params[0] == "#den")
    assert alice_there.command("/kick #den bob")[-1].startswith("ERR forbidden")
    sent = time.monotonic()
    alice.send("KICK #den bob :operator says")
    kick = bob.until(lambda m: m.verb == "KICK")[-1]
    print(f"the operator's kick reached the other node {time.monotonic() - sent:.3f} s after")
    assert kick == ":alice!alice@chatd KICK #den bob :operator says"
    assert read_until(alice_there, "KICK ") == "KICK #den bob alice operator says"

    started = time.monotonic()
    alice.send("MODE alice -o")
    alice.until(lambda m: m.verb == "MODE")
    dm_reaches(alice, bob, "bob", "deopered", started)
    assert who_flags(bob, "alice") == "H"
    assert "313" not in whois_numerics(bob, "alice")


def test_a_burst_of_wrong_opers_to_three_nodes_at_once_is_checked_as_on_one(cluster):  # noqa: F811
    """30 IRC guests on three nodes (10 each, all from 127.0.0.1) send OPER with a wrong
    password at the same moment. An OPER holds a place in the cluster's count of attempts
    in flight from its address while its password is checked, as a login does, so about
    the address's 10 (CHATD_LOGIN_FAILURES_PER_ADDRESS) are checked, not 10 per node
    (30); the rest are refused (464, too many attempts) without bcrypt. bcrypt is made
    slow enough (cost 10) that all 30 arrive while the first checks still run, and the
    bcrypt queue's own cap per address (shared too, 8 by default) is lifted out of the
    way, so what is measured is the count of logins in flight. Then the address is
    locked out on every node, logins included."""
    slow = {
        "CHATD_GUESTS": "on", "CHATD_BCRYPT_ROUNDS": "10", "CHATD_BCRYPT_PER_ADDRESS": "64",
        **IRC_ON,
    }
    nodes = [cluster(name, **slow) for name in ("a", "b", "c")]
    guests = []
    for number in range(30):
        guest = IRCSocketClient(nodes[number % 3].irc_port, timeout=30.0)
        guest.send(f"NICK guest{number}", f"USER g 0 * :Guest {number}")
        guest.until(lambda m: m.verb == "001")
        guests.append(guest)
    for guest in guests:
        guest.send("OPER nooperator wrong-password")
    replies = [guest.until(lambda m: m.verb in ("381", "464"))[-1] for guest in guests]
    checked = [reply for reply in replies if reply.endswith(":unknown user or wrong password")]
    refused = [reply for reply in replies if "too many" in reply]
    print(f"{len(checked)} of 30 wrong OPERs at once were checked, {len(refused)} refused")
    assert len(checked) + len(refused) == 30, replies
    # A node may admit a few more once places come free, before the failures that freed
    # them reach it (the counts travel on Redis); one node alone checks 10 at once.
    assert 10 <= len(checked) <= 15, replies
    for node in nodes:
        late = node.connect()
        late.command("/register lateuser password1")
        assert late.command("/login lateuser password1")[-1].startswith(
            "ERR too-many-attempts"
        )


GUESTS = {"CHATD_GUESTS": "on", **IRC_ON}


def guest_on(port: int, nick: str, *rooms: str) -> IRCSocketClient:
    """An IRC guest (no login) under ``nick``, in ``rooms``."""
    guest = IRCSocketClient(port)
    guest.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
    guest.until(lambda m: m.verb == "001")
    for room in rooms:
        guest.send(f"JOIN {room}")
        guest.until(lambda m: m.verb == "366")
    return guest


def refused_with(client: IRCSocketClient, numeric: str) -> str:
    """Read until an error numeric; it must be ``numeric``; its line."""
    line = client.until(lambda m: m.verb.isdigit() and m.verb >= "400")[-1]
    assert line.split(" ")[1] == numeric, line
    return line


def topic_marker(alice: IRCSocketClient, guest: IRCSocketClient, text: str,
                 started: float) -> None:
    """alice sets #side's topic to ``text``; wait until the guest (another node) is told,
    which is after every room event alice recorded before it. Prints how long it took
    from ``started``."""
    alice.send(f"TOPIC #side :{text}")
    guest.until(lambda m: m.verb == "TOPIC" and m.params[-1] == text)
    print(f"{text}: on the guest's node at most {time.monotonic() - started:.3f} s after")


def test_an_operator_on_one_node_voices_deops_kicks_a_guest_on_another(cluster):  # noqa: F811
    """alice (IRC, node a) operates #side, moderated; visitor, a guest on node b, is in it.
    Her +v lets visitor speak there (on b, where the guest's messages are checked), -v
    silences it again; +o of a guest and +b are refused, saying why (a guest is never
    made an operator, and bans are kept by account), as on one node. In #den, opened by
    the guest opener on b (its operator in b's memory only), who made alice an operator,
    her -o takes the guest's status away on b. Her KICK takes visitor out on b."""
    first, second = cluster("a", **GUESTS), cluster("b", **GUESTS)
    first.connect().login("alice")
    alice = irc_login(first.irc_port, "alice")
    alice.send("JOIN #side", "MODE #side +m")
    alice.until(lambda m: m.verb == "MODE")
    visitor = guest_on(second.irc_port, "visitor", "#side")
    alice.until(lambda m: m.verb == "JOIN" and m.source.startswith("visitor"))
    visitor.send("PRIVMSG #side :may I?")
    refused_with(visitor, "404")

    started = time.monotonic()
    alice.send("MODE #side +v visitor")
    mode_told(alice, "+v")
    topic_marker(alice, visitor, "voiced", started)
    visitor.send("PRIVMSG #side :now I may")
    alice.until(lambda m: m.verb == "PRIVMSG" and m.params[-1] == "now I may")

    started = time.monotonic()
    alice.send("MODE #side -v visitor")
    mode_told(alice, "-v")
    topic_marker(alice, visitor, "unvoiced", started)
    visitor.send("PRIVMSG #side :and now?")
    refused_with(visitor, "404")

    alice.send("MODE #side +o visitor")
    assert "guests are not made operators" in refused_with(alice, "482")
    alice.send("MODE #side +b visitor")
    assert "bans are kept by account" in refused_with(alice, "441")

    opener = guest_on(second.irc_port, "opener", "#den")
    alice.send("JOIN #den")
    alice.until(lambda m: m.verb == "366")
    opener.until(lambda m: m.verb == "JOIN" and m.source.startswith("alice"))
    opener.send("MODE #den +o alice")
    alice.until(lambda m: m.verb == "MODE" and m.params == ("#den", "+o", "alice"))
    started = time.monotonic()
    alice.send("MODE #den -o opener")
    told = opener.until(lambda m: (m.verb == "MODE" and m.params[1:] == ("-o", "opener"))
                        or (m.verb.isdigit() and m.verb >= "400"))
    print(f"the guest's -o on its node {time.monotonic() - started:.3f} s after it was sent")
    assert " MODE #den -o opener" in told[-1], told
    opener.send("KICK #den alice :mine")
    refused_with(opener, "482")

    started = time.monotonic()
    alice.send("KICK #side visitor :enough")
    kick = visitor.until(lambda m: m.verb == "KICK")[-1]
    print(f"the guest was kicked on its node {time.monotonic() - started:.3f} s after")
    assert kick == ":alice!alice@chatd KICK #side visitor enough"


def test_direct_messages_between_a_guest_and_accounts_across_nodes(cluster):  # noqa: F811
    """alice (an account, line door, node a) and visitor (a guest, IRC, node b) exchange
    DMs both ways, delivered; so do two guests on different nodes. WHOIS on node a knows
    visitor for a guest (no 330). alice keeps the DM in her history (a guest keeps none).
    Once visitor has quit, a DM to it is no-such-user, not stored (a guest has no
    mailbox)."""
    first, second = cluster("a", **GUESTS), cluster("b", **GUESTS)
    alice = first.connect()
    alice.login("alice")
    assert alice.command("/join #side")[-1] == "OK join #side"
    visitor = guest_on(second.irc_port, "visitor", "#side")
    read_until(alice, "JOIN #side visitor")
    wanderer = guest_on(first.irc_port, "wanderer")

    sent = time.monotonic()
    assert alice.command("/msg visitor hello guest")[-1] == "OK msg visitor delivered"
    told = visitor.until(lambda m: m.verb == "PRIVMSG")[-1]
    print(f"account to guest: {time.monotonic() - sent:.3f} s")
    assert told == ":alice!alice@chatd PRIVMSG visitor :hello guest"
    sent = time.monotonic()
    visitor.send("PRIVMSG alice :hello account")
    assert read_until(alice, "DM ") == "DM visitor alice hello account"
    print(f"guest to account: {time.monotonic() - sent:.3f} s")
    sent = time.monotonic()
    wanderer.send("PRIVMSG visitor :hello other guest")
    told = visitor.until(lambda m: m.verb == "PRIVMSG")[-1]
    print(f"guest to guest: {time.monotonic() - sent:.3f} s")
    assert told == ":wanderer!wanderer@chatd PRIVMSG visitor :hello other guest"

    alice_irc = irc_login(first.irc_port, "alice")
    # visitor's node says it is a guest: no 330 (logged in as) for it here, as there.
    numerics = whois_numerics(alice_irc, "visitor")
    assert "311" in numerics and "330" not in numerics, numerics
    assert "330" in whois_numerics(alice_irc, "alice")
    alice_irc.send(
        "CAP REQ :draft/chathistory batch server-time", "CHATHISTORY LATEST visitor * 10"
    )
    lines = alice_irc.until(lambda m: m.verb == "BATCH" and m.params[0].startswith("-"))
    said = [line.rsplit(" :", 1)[-1] for line in lines if " PRIVMSG " in line]
    assert said == ["hello guest", "hello account"], lines

    visitor.send("QUIT :bye")
    read_until(alice, "PART #side visitor")
    assert alice.command("/msg visitor still there?")[-1].startswith("ERR no-such-user")
