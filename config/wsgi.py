"""WSGI entry point (gunicorn config.wsgi).

Django's application behind the OCPI result front (aggregator.ocpi.result_wsgi): the usual asynchronous
ChargingProfileResult POST -- one per dispatched command -- is recorded with the same single UPDATE the Django
view runs and answered with the same headers, without Django's request cycle; every other request, and any
result the front does not recognise as the usual case, goes to Django unchanged.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

# isort: split
from aggregator.ocpi.result_wsgi import ResultFastPath  # noqa: E402 - needs the apps loaded above

application = ResultFastPath(django_application)
