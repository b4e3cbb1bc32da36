"""The private PostgreSQL and Redis that cluster-mode tests stand on."""

import socket

from tests.programs import require_module


def test_postgres_server_runs_queries(postgres_server):
    """A database can be created on the private PostgreSQL and queried."""
    psycopg = require_module("psycopg", "psycopg[binary]")
    url = postgres_server.create_database("services_check")
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT 40 + 2").fetchone() == (42,)


def test_redis_server_answers_ping(redis_server):
    """The private redis-server answers PING over RESP on its loopback port."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=10) as connection:
        connection.sendall(b"PING\r\n")
        assert connection.recv(64) == b"+PONG\r\n"
