"""OSCP 2.0 as Capacity Provider: peer lifecycle and outbox (services), Celery tasks, the receiver views and
routes (mounted at /oscp/). Capacity forecasts themselves are computed in aggregator.oscp_dispatch."""
