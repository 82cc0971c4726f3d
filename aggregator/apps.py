from __future__ import annotations

from django.apps import AppConfig


class AggregatorConfig(AppConfig):
    name = "aggregator"
    verbose_name = "Aggregator"

    def ready(self) -> None:
        # Subscribe to market events (orders placed -> dispatch). Market never imports us.
        from aggregator import subscriptions  # noqa: F401
