"""Test helpers shared across apps (fake counterparties, servers)."""
