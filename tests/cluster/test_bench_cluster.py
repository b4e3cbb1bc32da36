"""``scripts/bench.py cluster``: the cluster targets run end to end on tiny numbers.

The smoke run checks that the bench still starts chatd on PostgreSQL alone, with
Redis fan-out, and as two nodes, and that every message reaches every session,
never how fast: the measurements belong in ``docs/benchmarks.md``.
"""

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

from tests.programs import require_module, require_program
from tests.services import _postgres_bin
from tests.test_bench import BENCH_PATH, ROOT, bench


def test_sessions_take_turns_between_the_nodes_of_a_cluster_target():
    """With several ports each session goes to the next node; with one, all go to it."""
    two_nodes = Namespace(port=1000, ports=[1000, 2000])
    assert [bench.port_of_session(two_nodes, i) for i in range(4)] == [1000, 2000, 1000, 2000]
    one_server = Namespace(port=1000)
    assert {bench.port_of_session(one_server, i) for i in range(4)} == {1000}


def test_cluster_smoke_run_delivers_everything_on_one_and_two_nodes(tmp_path):
    """One node on PostgreSQL, one with Redis fan-out, two nodes with the sessions split
    (so the senders' messages cross Redis to the other node's readers): each delivers
    every message to every session, summarizes, and leaves no node running. The bench
    starts its own PostgreSQL and redis-server, as an operator's run would."""
    require_module("psycopg", "psycopg[binary]")
    require_module("txredisapi", "txredisapi")
    _postgres_bin("initdb")
    require_program("redis-server", "redis-server")
    out = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, str(BENCH_PATH), "cluster", "--preset", "smoke", "--runs", "1",
         "--scenarios", "fanout", "--work-dir", str(tmp_path / "work"),
         "--out", str(out), "--time-limit", "240"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| metric | pg | pg-redis | pg-redis-2 | pg-redis/pg | pg-redis-2/pg-redis |" \
        in completed.stdout
    report = json.loads(out.read_text())
    assert [r["target"] for r in report["records"]] == ["pg", "pg-redis", "pg-redis-2"]
    for record in report["records"]:
        assert "error" not in record, record["error"]
        assert record["delivered"] == record["expected"] > 0
        assert not Path(f"/proc/{record['server_pid']}").exists()
