"""Tests of cluster mode (chatd/cluster)."""
