"""config.wsgi's application behind the OCPI result front (aggregator.ocpi.result_wsgi): `gunicorn aggregator.wsgi`.

For config/wsgi.py to adopt (`application = ResultFastPath(get_wsgi_application())`); until then bench.dispatch
measures it with `--web-app aggregator.wsgi:application`.
"""

from __future__ import annotations

from config.wsgi import application as django_application  # first: it sets up Django

# isort: split
from aggregator.ocpi.result_wsgi import ResultFastPath

application = ResultFastPath(django_application)
