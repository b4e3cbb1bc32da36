"""Cluster mode: several nodes on one PostgreSQL, with Redis announcing (docs/cluster.md)."""
