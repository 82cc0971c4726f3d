"""Smart-meter data: the latest reading per connection and ISP, its superseded versions, and the import batches.

MeterReading holds only the LATEST version of each (connection, ISP), so settlement reads one narrow table;
a correction moves the value it replaces to MeterReadingVersion. Every reading names the batch it came from.

Note: MeterReading.connection has no database foreign-key constraint and no index of its own. At national
scale (100,000 connections x 96 ISPs a day) a per-row referential-integrity trigger and a second index would
cost more than the rest of the import; every import validates each EAN against Connection set-wise instead, and
the (connection, isp_start) unique index serves every lookup by connection.

On PostgreSQL the table is partitioned by market day (migration 0005): a new day of national data is loaded into
a table of its own and attached (services.meter_day_load). There id has no index; look readings up by
(connection, isp_start).
"""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from common.models import PublicIdModel
from market.models import Connection, Participant

# Low-voltage small-consumer connections end at 3 x 80 A (Dutch "kleinverbruik"): 3 x 80 A x 230 V = 55.2 kW.
DEFAULT_CONNECTION_LIMIT_KW = Decimal("55.2")


class MeterImportBatch(PublicIdModel):
    """One delivery of meter data (a file, an API call, a UFTP Metering message) and what became of it."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSON = "json", "JSON (API)"
        UFTP = "uftp", "UFTP Metering"
        DSMR = "dsmr", "DSMR P1 telegrams"
        ROWS = "rows", "Rows (internal)"

    submitted_by = models.ForeignKey(Participant, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="meter_imports",
                                     help_text="The organisation that sent the data; empty for an operator's import.")
    source_format = models.CharField(max_length=4, choices=Format.choices)
    source_name = models.CharField(max_length=255, blank=True, help_text="File name or message id.")
    content_hash = models.CharField(max_length=64, db_index=True,
                                    help_text="SHA-256 of the delivery; the same content again replays this batch.")
    engine = models.CharField(max_length=10, default="python", help_text="copy (PostgreSQL set-based) or python.")
    received = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0, help_text="Readings for ISPs not stored before.")
    corrected = models.PositiveIntegerField(default=0, help_text="New versions of stored readings.")
    unchanged = models.PositiveIntegerField(default=0, help_text="Rows equal to the stored reading.")
    rejected = models.PositiveIntegerField(default=0)
    gaps = models.PositiveIntegerField(default=0, help_text="Runs of missing ISPs inside a connection's series.")
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return (f"{self.get_source_format_display()} {self.source_name or self.pk}: +{self.accepted} "
                f"~{self.corrected} ={self.unchanged} x{self.rejected}")


class MeterImportRejection(models.Model):
    """One refused row of a batch (row_number set) or one gap in a connection's series (row_number empty)."""

    class Reason(models.TextChoices):
        MALFORMED = "malformed", "Malformed value"
        NAIVE_DATETIME = "naive_datetime", "ISP start without UTC offset"
        UNKNOWN_CONNECTION = "unknown_connection", "Unknown connection"
        DUPLICATE_IN_FILE = "duplicate_in_file", "Same connection and ISP more than once in the delivery"
        ISP_NOT_ALIGNED = "isp_not_aligned", "ISP start not on a quarter-hour"
        NEGATIVE_ENERGY = "negative_energy", "Negative energy"
        IMPLAUSIBLE_ENERGY = "implausible_energy", "More energy than the connection can carry in an ISP"
        GAP = "gap", "ISPs missing inside the connection's series"

    id = models.BigAutoField(primary_key=True)
    batch = models.ForeignKey(MeterImportBatch, on_delete=models.CASCADE, related_name="rejections")
    row_number = models.PositiveIntegerField(null=True, blank=True,
                                             help_text="1-based data row of the delivery (header not counted).")
    connection_ean = models.CharField(max_length=64, blank=True)
    isp_start = models.CharField(max_length=64, blank=True, help_text="As delivered (first missing ISP for a gap).")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["batch", "row_number", "id"]

    def __str__(self) -> str:
        return f"row {self.row_number}: {self.reason}"


class ConnectionCapacity(models.Model):
    """The physical limit of one connection, where it differs from the small-consumer default (3 x 80 A).

    A reading above limit x ISP hours is implausible and refused."""

    connection = models.OneToOneField(Connection, primary_key=True, on_delete=models.CASCADE,
                                      related_name="meter_capacity")
    max_power_kw = models.DecimalField(max_digits=9, decimal_places=1, validators=[MinValueValidator(Decimal("0"))])

    class Meta:
        verbose_name_plural = "connection capacities"

    def __str__(self) -> str:
        return f"{self.connection_id}: {self.max_power_kw} kW"


class MeterReading(models.Model):
    """Energy through one connection during one ISP (15-minute smart-meter interval), in kWh: the latest version."""

    class Quality(models.IntegerChoices):
        MEASURED = 0, "Measured"
        ESTIMATED = 1, "Estimated"

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="meter_readings",
                                   db_constraint=False, db_index=False)
    isp_start = models.DateTimeField(help_text="UTC start of the ISP.")
    kwh_import = models.DecimalField(max_digits=12, decimal_places=3, validators=[MinValueValidator(Decimal("0"))])
    kwh_export = models.DecimalField(max_digits=12, decimal_places=3, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))])
    quality = models.SmallIntegerField(choices=Quality.choices, default=Quality.MEASURED)
    version = models.PositiveIntegerField(default=1, help_text="1 for the first delivery, +1 per correction.")
    batch = models.ForeignKey(MeterImportBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                              db_constraint=False, db_index=False, help_text="The delivery this version came from.")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connection_id", "isp_start"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "isp_start"], name="meter_reading_unique_per_isp")
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.isp_start:%Y-%m-%d %H:%M}Z +{self.kwh_import}/-{self.kwh_export} kWh"


class MeterReadingVersion(models.Model):
    """A superseded version of a reading, kept when a correction replaced it."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                                   db_index=False)
    isp_start = models.DateTimeField()
    version = models.PositiveIntegerField()
    kwh_import = models.DecimalField(max_digits=12, decimal_places=3)
    kwh_export = models.DecimalField(max_digits=12, decimal_places=3)
    quality = models.SmallIntegerField(choices=MeterReading.Quality.choices)
    batch = models.ForeignKey(MeterImportBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                              db_constraint=False, db_index=False)
    received_at = models.DateTimeField()
    superseded_by = models.ForeignKey(MeterImportBatch, on_delete=models.PROTECT, related_name="+",
                                      db_constraint=False, db_index=False)
    superseded_at = models.DateTimeField()

    class Meta:
        ordering = ["connection_id", "isp_start", "version"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "isp_start", "version"], name="meter_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.isp_start:%Y-%m-%d %H:%M}Z v{self.version}"
