"""Fixtures shared across the test suite."""

import pytest

from tests.support import ChatHarness


@pytest.fixture
def harness() -> ChatHarness:
    """An in-memory chatd server driven over StringTransport."""
    return ChatHarness()


@pytest.fixture
def chatd_server(tmp_path):
    """The real ``twistd -ny chatd.tac``, started in ``tmp_path``; killed after the test."""
    from tests.serverproc import ServerProcess

    server = ServerProcess(tmp_path).start()
    yield server
    server.stop()
