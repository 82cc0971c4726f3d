"""Smart-meter data: one reading per connection and ISP."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from market.models import Connection


class MeterReading(models.Model):
    """Energy through one connection during one ISP (15-minute smart-meter interval), in kWh."""

    class Quality(models.IntegerChoices):
        MEASURED = 0, "Measured"
        ESTIMATED = 1, "Estimated"

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="meter_readings")
    isp_start = models.DateTimeField(help_text="UTC start of the ISP.")
    kwh_import = models.DecimalField(max_digits=12, decimal_places=3, validators=[MinValueValidator(Decimal("0"))])
    kwh_export = models.DecimalField(max_digits=12, decimal_places=3, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))])
    quality = models.SmallIntegerField(choices=Quality.choices, default=Quality.MEASURED)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connection_id", "isp_start"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "isp_start"], name="meter_reading_unique_per_isp")
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.isp_start:%Y-%m-%d %H:%M}Z +{self.kwh_import}/-{self.kwh_export} kWh"
