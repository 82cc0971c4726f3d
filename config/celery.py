"""The Celery application; tasks live in each app's tasks.py and are discovered from INSTALLED_APPS."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("flexmarket")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# OSCP tasks live in a sub-package (aggregator/oscp/tasks.py), which the default discovery does not look into.
app.autodiscover_tasks(["aggregator.oscp"])
