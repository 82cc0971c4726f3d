"""Our aggregator's subscriptions to market events (placeholder until dispatch lands)."""
