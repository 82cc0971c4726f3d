"""Run the `extrawest-ocpi` package (PyPI, FastAPI) as an OCPI 2.2.1 CPO on loopback, for tests/peers.

Executed by the peer's own virtualenv (var/peers/extrawest-ocpi), never imported by the product:
    python extrawest_cpo.py <port> <state-file>

The library is a framework: storage ("crud") and token checks are the integrator's. This one keeps everything in
memory: token A for registration, the client's credentials after the handshake, three sessions (one per page of
two), and every charging profile PUT it received. GET /peer/state shows that state to the test.
"""

from __future__ import annotations

import json
import os
import sys

PORT = int(sys.argv[1])
os.environ.update({"OCPI_HOST": f"127.0.0.1:{PORT}", "PROTOCOL": "http", "COUNTRY_CODE": "NL", "PARTY_ID": "EXW",
                   "NO_AUTH": "false", "ENVIRONMENT": "production"})

import uvicorn  # noqa: E402
from py_ocpi import get_application  # noqa: E402
from py_ocpi.core.authentication.authenticator import Authenticator  # noqa: E402
from py_ocpi.core.enums import Action, ModuleID, RoleEnum  # noqa: E402
from py_ocpi.modules.versions.enums import VersionNumber  # noqa: E402

TOKEN_A = "extrawest-token-a"
PUSH_TOKEN = "extrawest-push-token"
STATE: dict = {"token_c": [], "client": None, "profiles": [], "calls": []}
SESSIONS = {
    f"EXW-SES-{n}": {
        "country_code": "NL", "party_id": "EXW", "id": f"EXW-SES-{n}", "start_date_time": "2026-03-01T17:00:00Z",
        "kwh": 1.5 * n, "cdr_token": {"country_code": "NL", "party_id": "EXW", "uid": f"RFID{n}", "type": "RFID",
                                      "contract_id": f"NL-EXW-C{n:08d}"},
        "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": f"NL*EXW*E{n}", "connector_id": "1",
        "currency": "EUR", "status": "ACTIVE", "last_updated": f"2026-03-01T17:0{n}:00Z",
    } for n in range(1, 4)
}


class Auth(Authenticator):
    @classmethod
    async def get_valid_token_c(cls) -> list:
        return [*STATE["token_c"], PUSH_TOKEN]

    @classmethod
    async def get_valid_token_a(cls) -> list:
        return [TOKEN_A]


class Crud:
    @classmethod
    async def get(cls, module, role, id, *args, **kwargs):
        STATE["calls"].append(["get", str(module), str(id)])
        if module == ModuleID.credentials_and_registration:
            client = STATE["client"] or {}
            return {"token": STATE["token_c"][-1] if STATE["token_c"] else TOKEN_A,
                    "url": f"http://127.0.0.1:{PORT}/ocpi/versions", "roles": cls._roles(),
                    "client": client}
        if module == ModuleID.sessions:  # ids are CiString; the library lower-cases them on the way in
            return next((value for key, value in SESSIONS.items() if key.upper() == str(id).upper()), None)
        return None  # charging profile results from the "charger": none (see the peer gap in the README)

    @staticmethod
    def _roles() -> list:
        return [{"role": "CPO", "party_id": "EXW", "country_code": "NL",
                 "business_details": {"name": "extrawest-ocpi peer"}}]

    @classmethod
    async def list(cls, module, role, filters, *args, **kwargs):
        STATE["calls"].append(["list", str(module), {k: str(v) for k, v in filters.items()}])
        items = list(SESSIONS.values()) if module == ModuleID.sessions else []
        offset, limit = filters["offset"], filters["limit"]
        page = items[offset:offset + limit]
        return page, len(items), offset + limit >= len(items)

    @classmethod
    async def create(cls, module, role, data, *args, **kwargs):
        if module == ModuleID.credentials_and_registration:
            STATE["client"] = data
            token_c = f"extrawest-token-c-{len(STATE['token_c']) + 1}"
            STATE["token_c"].append(token_c)
            return {"token": token_c, "url": f"http://127.0.0.1:{PORT}/ocpi/versions", "roles": cls._roles()}
        return data

    @classmethod
    async def update(cls, module, role, data, id, *args, **kwargs):
        return await cls.create(module, role, data, *args, **kwargs)

    @classmethod
    async def delete(cls, module, role, id, *args, **kwargs):
        STATE["calls"].append(["delete", str(module), str(id)])
        if module == ModuleID.credentials_and_registration:
            STATE["client"] = None
            STATE["token_c"].clear()

    @classmethod
    async def do(cls, module, role, action, *args, data=None, **kwargs):
        STATE["calls"].append(["do", str(module), str(action)])
        if action == Action.get_client_token:
            client = STATE["client"] or {}
            return (client.get("credentials") or {}).get("token")
        if action in (Action.send_update_charging_profile, Action.send_get_chargingprofile,
                      Action.send_delete_chargingprofile):
            STATE["profiles"].append({"action": str(action), "session_id": kwargs.get("session_id"),
                                      "response_url": str(kwargs.get("response_url")),
                                      "charging_profile": _jsonable(kwargs.get("charging_profile"))})
            return {"result": "ACCEPTED", "timeout": 30}
        return None


def _jsonable(value):
    if value is None:
        return None
    if hasattr(value, "dict"):
        value = value.dict()
    return json.loads(json.dumps(value, default=str))


app = get_application(
    version_numbers=[VersionNumber.v_2_2_1],
    roles=[RoleEnum.cpo],
    crud=Crud,
    modules=[ModuleID.credentials_and_registration, ModuleID.sessions, ModuleID.charging_profile,
             ModuleID.locations],
    authenticator=Auth,
    http_push=True,
)


@app.get("/peer/state")
async def peer_state() -> dict:
    return _jsonable(STATE)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
