"""Register at a CPO over OCPI 2.2.1 with the token A and versions URL it gave us out of band.

    manage.py ocpi_register <cpo-id> <versions-url> <token-a>
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregator.models import ChargePointOperator
from aggregator.ocpi.registration import register_with_cpo
from common.exceptions import ApplicationError


class Command(BaseCommand):
    help = "OCPI credentials handshake with us as sender: token A -> our token B -> the CPO's token C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("cpo_id")
        parser.add_argument("versions_url")
        parser.add_argument("token_a")

    def handle(self, *args: Any, **options: Any) -> None:
        cpo = ChargePointOperator.objects.filter(pk=options["cpo_id"]).first()
        if cpo is None:
            raise CommandError(f"No charge point operator {options['cpo_id']}.")
        try:
            registered = register_with_cpo(cpo=cpo, versions_url=options["versions_url"], token_a=options["token_a"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        modules = sorted({endpoint["identifier"] for endpoint in registered.ocpi_endpoints})
        self.stdout.write(f"registered at {registered}: OCPI {registered.ocpi_version}, modules {', '.join(modules)}")
