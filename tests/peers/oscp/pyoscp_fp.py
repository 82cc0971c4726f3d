"""A Flexibility Provider built from the `pyoscp` package (NOWUM/pyoscp, PyPI 0.1.0), run as its own process.

Runs in the virtualenv tests/peers/oscp/peer.py creates under var/peers/ (never in ours: pyoscp pins Flask-era
packages). It serves pyoscp's own FP blueprint (register, handshake, handshake_acknowledgment, heartbeat,
update_group_capacity_forecast) with pyoscp's RegistrationDictMan and its background thread (handshake
acknowledgements, heartbeats, registrations it starts), plus a few /control/ routes for the test:
    POST /control/seed      {"token": ..., "cp_base_url": ..., "cp_token": ..., "should_register": bool}
    POST /control/send      {"endpoint": ..., "body": {...}, "correlation_id": ...}  (pyoscp's createOscpHeader)
    POST /control/heartbeat {"interval": N}  (pyoscp's own _send_heartbeat)
    GET  /control/state     endpoints.json, forecasts received, every outbound call pyoscp made and its answer
Prints one JSON line {"port": N} once listening. Usage: python pyoscp_fp.py STATE_DIR
"""

import json
import logging
import sys
import threading
from pathlib import Path

import oscp.RegistrationManager as registration
import requests
from flask import Flask, jsonify, request
from oscp import createBlueprint
from oscp.RegistrationManager import RegistrationDictMan, createOscpHeader
from werkzeug.serving import make_server

state_dir = Path(sys.argv[1])
state_dir.mkdir(parents=True, exist_ok=True)
logging.basicConfig(filename=str(state_dir / "pyoscp.log"), level=logging.INFO)
lock = threading.Lock()
forecasts = []
calls = []

# Record every call pyoscp itself makes (register answers, acks, heartbeats) and what it got back.
_real_post = requests.post


def recording_post(url, headers=None, json=None, **kwargs):
    response = _real_post(url, headers=headers, json=json, timeout=10, **kwargs)
    with lock:
        calls.append({"url": url, "headers": dict(headers or {}), "body": json, "status": response.status_code,
                      "answer": response.text[:500]})
    return response


registration.requests.post = recording_post


class FlexibilityProvider:
    """pyoscp leaves the FP's business logic to the application: we keep what arrives."""

    def handleUpdateGroupCapacityForecast(self, payload, token):
        with lock:
            forecasts.append({"payload": payload, "token": token, "request_id": request.headers.get("X-Request-ID"),
                              "raw": request.get_json()})


app = Flask("pyoscp-fp")
server = make_server("127.0.0.1", 0, app, threaded=True)
port = server.server_port
base_url = f"http://127.0.0.1:{port}/oscp/fp/2.0"
manager = RegistrationDictMan(version_urls=[{"version": "2.0", "base_url": base_url}],
                              filename=str(state_dir / "endpoints.json"))
app.register_blueprint(createBlueprint({"registrationmanager": manager, "flexibilityprovider": FlexibilityProvider()},
                                       "fp"))


@app.post("/control/seed")
def seed():
    data = request.get_json()
    with registration.lock:
        endpoints = manager.readJson()
        entry = {"register": {"token": data.get("cp_token"), "base_url": data.get("cp_base_url")}}
        if data.get("should_register"):
            entry["should_register"] = True
        endpoints[data["token"]] = entry
        manager.writeJson(endpoints)
    return "", 204


@app.post("/control/send")
def send():
    data = request.get_json()
    endpoints = manager.readJson()
    token, entry = next((t, e) for t, e in endpoints.items() if e.get("register", {}).get("base_url"))
    url = entry["register"]["base_url"] + "/" + data["endpoint"]
    response = _real_post(url, headers=createOscpHeader(entry["register"]["token"], data.get("correlation_id")),
                          json=data["body"], timeout=10)
    return jsonify({"status": response.status_code, "answer": response.text[:500]})


@app.post("/control/heartbeat")
def heartbeat():
    """pyoscp's own heartbeat sender (its background job only gets there once a handshake ack succeeded)."""
    endpoints = manager.readJson()
    entry = next(e for e in endpoints.values() if e.get("register", {}).get("base_url"))
    manager._send_heartbeat(entry["register"]["base_url"], request.get_json()["interval"], entry["register"]["token"])
    return "", 204


@app.get("/control/state")
def state():
    with lock:
        return jsonify({"endpoints": manager.readJson(), "forecasts": forecasts, "calls": calls,
                        "base_url": base_url})


manager.start()
print(json.dumps({"port": port, "base_url": base_url}), flush=True)
server.serve_forever()
