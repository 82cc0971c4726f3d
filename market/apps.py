from __future__ import annotations

from django.apps import AppConfig


class MarketConfig(AppConfig):
    name = "market"
    verbose_name = "Market"

    def ready(self) -> None:
        from market import schema  # noqa: F401  (registers the OpenAPI extension)
