"""Runs the independent OSCP peer: pyoscp (PyPI 0.1.0) as a Flexibility Provider in its own virtualenv and process.

The virtualenv lives under var/peers/pyoscp-0.1.0 and is reused between runs (a marker file records a finished
install). pyoscp stays out of the product's dependencies: it pins an old Flask stack. If the install fails the
tests skip and say why. pyoscp 0.1.0 imports `dateutil` without declaring it (gap 1 in the README's OSCP section),
so python-dateutil is installed next to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
VENV = ROOT / "var" / "peers" / "pyoscp-0.1.0"
MARKER = VENV / ".installed"
HARNESS = Path(__file__).with_name("pyoscp_fp.py")
REQUIREMENTS = ["pyoscp==0.1.0", "python-dateutil"]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """Create the peer's virtualenv once; skip (naming the failure) when it cannot be built."""
    if MARKER.exists() and venv_python().exists():
        return venv_python()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
             [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"pyoscp peer: could not build its virtualenv ({' '.join(step[:4])}...): {exc}")
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            pytest.skip(f"pyoscp peer: '{' '.join(step[2:])}' failed (exit {done.returncode}): {tail}")
    freeze = subprocess.run([str(venv_python()), "-m", "pip", "freeze"], capture_output=True, text=True)  # noqa: S603
    MARKER.write_text(freeze.stdout)
    return venv_python()


@dataclass
class PyoscpFp:
    process: subprocess.Popen
    url: str  # the harness root, e.g. http://127.0.0.1:PORT
    base_url: str  # its OSCP FP base URL
    state_dir: Path

    def seed(self, **entry: Any) -> None:
        httpx.post(f"{self.url}/control/seed", json=entry, timeout=10).raise_for_status()

    def send(self, endpoint: str, body: dict[str, Any], correlation_id: str | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/control/send", timeout=30,
                              json={"endpoint": endpoint, "body": body, "correlation_id": correlation_id})
        response.raise_for_status()
        return response.json()

    def heartbeat(self, interval_s: int) -> None:
        httpx.post(f"{self.url}/control/heartbeat", json={"interval": interval_s}, timeout=30).raise_for_status()

    def state(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/control/state", timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for(self, condition: Callable[[dict[str, Any]], Any], *, what: str, within_s: float = 40) -> Any:
        """Poll the peer's state until `condition` holds (pyoscp's background thread runs every 5 s)."""
        deadline = time.monotonic() + within_s
        while True:
            state = self.state()
            found = condition(state)
            if found:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.state_dir / "pyoscp.log").read_text() if (self.state_dir / "pyoscp.log").exists() else ""
                raise AssertionError(f"pyoscp peer never showed {what}; state={json.dumps(state)[:3000]}\n{log[-3000:]}")
            time.sleep(0.5)

    def log(self) -> str:
        path = self.state_dir / "pyoscp.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture(scope="session")
def pyoscp_python() -> Path:
    return ensure_venv()


@pytest.fixture
def pyoscp_fp(pyoscp_python: Path, tmp_path: Path) -> Iterator[PyoscpFp]:
    state_dir = tmp_path / "pyoscp"
    process = subprocess.Popen(  # noqa: S603
        [str(pyoscp_python), str(HARNESS), str(state_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=state_dir.parent)
    try:
        line = process.stdout.readline() if process.stdout else ""
        try:
            started = json.loads(line)
        except ValueError:
            rest = process.stdout.read() if process.stdout and process.poll() is not None else ""
            pytest.fail(f"pyoscp peer did not start: {line}{rest}")
        yield PyoscpFp(process=process, url=f"http://127.0.0.1:{started['port']}", base_url=started["base_url"],
                       state_dir=state_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
