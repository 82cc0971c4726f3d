"""deploy/ stays in step with the code: every setting documented, scripts valid, every routed queue consumed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / ".env.example"
SCRIPTS = ["web", "worker", "beat", "migrate"]
APP_SERVICES = ["migrate", "web", "worker-dispatch", "worker-default", "beat"]

ENV_CALL = re.compile(r"""\benv_(?:str|bool|int|list)\(\s*["']([A-Z][A-Z0-9_]*)["']""")


def settings_env_names() -> set[str]:
    """Every variable name config/settings.py reads through config.env (found in the source)."""
    return set(ENV_CALL.findall((ROOT / "config" / "settings.py").read_text(encoding="utf-8")))


def documented_env_names() -> dict[str, int]:
    """Variables in .env.example, set (`NAME=`) or shown commented out (`# NAME=`), with their line index."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    found: dict[str, int] = {}
    for index, line in enumerate(lines):
        match = re.match(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", line)
        if match:
            found[match.group(1)] = index
    return found


def test_the_settings_scan_finds_the_variables() -> None:
    names = settings_env_names()
    assert {"SECRET_KEY", "DEBUG", "DATABASE_URL", "CELERY_BROKER_URL", "ALLOWED_HOSTS"} <= names


def test_every_setting_read_from_the_environment_is_in_env_example() -> None:
    missing = settings_env_names() - documented_env_names().keys()
    assert not missing, f"add these to deploy/.env.example with a one-line comment: {sorted(missing)}"


def test_every_variable_in_env_example_has_a_comment_line_above_it() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for name, index in documented_env_names().items():
        above = lines[index - 1] if index else ""
        assert above.startswith("# ") and not re.match(r"^#\s*[A-Z][A-Z0-9_]*=", above), name


@pytest.mark.parametrize("name", SCRIPTS)
def test_process_scripts_are_executable_posix_sh(name: str) -> None:
    script = DEPLOY / "bin" / name
    text = script.read_text(encoding="utf-8")
    assert os.access(script, os.X_OK), f"chmod +x deploy/bin/{name}"
    assert text.startswith("#!/bin/sh\n")
    assert "set -eu" in text
    assert re.search(r"^exec ", text, re.MULTILINE), "the final process must replace the shell (exec)"
    sh = shutil.which("sh")
    if sh:
        result = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True, check=False)  # noqa: S603
        assert result.returncode == 0, result.stderr


def test_compose_runs_every_process_after_migrations() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"postgres", "redis", *APP_SERVICES} <= services.keys()
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == ".env", name
        assert service["command"] == [name.split("-")[0]], name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
    for name in ["postgres", "redis", "web", "worker-dispatch", "worker-default"]:
        assert "healthcheck" in services[name], name


def test_compose_workers_consume_every_routed_queue() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    consumed = set()
    for service in compose["services"].values():
        if service.get("command") == ["worker"]:
            consumed |= set(service["environment"]["CELERY_QUEUES"].split(","))
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert routed <= consumed, f"no worker consumes {sorted(routed - consumed)}"
