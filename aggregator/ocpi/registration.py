"""The OCPI credentials handshake, both ways (OCPI-BRIEF 3).

The CPO registers at us (we are the receiver of its POST): the operator issues token A (`token_a_issue`) and
gives it with our versions URL to the CPO out of band; the CPO reads our versions with A and POSTs its
credentials (token B, its versions URL, its roles); we read its versions and version details with B, issue
token C and answer with it (`credentials_post`). From then on the CPO calls us with C, we call it with B, and A
is dead. PUT rotates (new B from the CPO, fresh C from us) and DELETE unregisters.

We register at the CPO (we are the sender): the operator enters the CPO's versions URL and its token A;
`register_with_cpo` reads versions and details with A, stores a fresh token B for the CPO to call us with,
POSTs our credentials and keeps the token C the CPO answers with. `rotate_at_cpo` (PUT) and
`unregister_at_cpo` (DELETE) are the same in the other direction.

No database transaction is held across an HTTP call: the peer calls us back during the handshake.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from aggregator.adapters.ocpi import OCPI_VERSION, ocpi_request
from aggregator.models import ChargePointOperator
from aggregator.ocpi.transport import (
    NO_MATCHING_ENDPOINTS,
    UNABLE_TO_USE_CLIENT_API,
    UNSUPPORTED_VERSION,
    OcpiError,
)
from common import time as clock
from common.audit import audit_record
from common.exceptions import AdapterError, ApplicationError, TransitionError

logger = logging.getLogger("aggregator.ocpi")

Registration = ChargePointOperator.Registration
TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{1,64}$")
OCPI_ACTOR = "ocpi-credentials"
REQUIRED_MODULES = ("credentials",)


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 43 printable characters: within CiString(64)


def our_versions_url() -> str:
    return f"{settings.PUBLIC_BASE_URL}/ocpi/versions"


def our_credentials(*, cpo: ChargePointOperator, token: str) -> dict[str, Any]:
    """Our Credentials object: the token the CPO uses to call us, our versions URL, our SCSP role."""
    return {
        "token": token,
        "url": our_versions_url(),
        "roles": [{
            "role": "SCSP",
            "business_details": {"name": cpo.aggregator.name},
            "party_id": settings.OCPI_PARTY_ID,
            "country_code": settings.OCPI_COUNTRY_CODE,
        }],
    }


@dataclass(frozen=True)
class PeerVersion:
    versions_url: str
    version: str
    endpoints: list[dict[str, str]]
    auth_base64: bool


def _validated_credentials(body: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """token, url and roles of a Credentials object; OcpiError 2001 when malformed."""
    if not isinstance(body, dict):
        raise OcpiError("The body must be a Credentials object")
    token, url, roles = body.get("token"), body.get("url"), body.get("roles")
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise OcpiError("token must be 1-64 printable ASCII characters without spaces")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 255:
        raise OcpiError("url must be the versions endpoint URL (max 255)")
    if not isinstance(roles, list) or not roles or not all(
        isinstance(role, dict) and role.get("role") and role.get("party_id") and role.get("country_code")
        for role in roles
    ):
        raise OcpiError("roles must list at least one CredentialsRole with role, party_id and country_code")
    return token, url, roles


def _get_versions(url: str, *, token: str, encodings: tuple[bool, ...]) -> tuple[Any, bool]:
    """GET versions with the token encoded each way in turn, moving on only after an HTTP 401."""
    last: AdapterError | None = None
    for encoded in encodings:
        try:
            data, _ = ocpi_request("GET", url, token=token, base64_encoded=encoded)
            return data, encoded
        except AdapterError as exc:
            last = exc
            if exc.status_code != 401:
                break
    message = last.message if last is not None else "no attempt"
    raise OcpiError(f"Could not read your versions endpoint: {message}", status_code=UNABLE_TO_USE_CLIENT_API)


def fetch_peer_version(*, versions_url: str, token: str, auth_base64: bool = True) -> PeerVersion:
    """GET the peer's versions, pick 2.2.1, GET its version details (endpoints).

    Tries the token Base64-encoded first, then raw when the peer answers 401 (older peers: OCPI-BRIEF 2.1).
    Raises OcpiError 3001 (peer unreachable / refuses us), 3002 (no 2.2.1), 3003 (no credentials endpoint).
    """
    versions, encoded = _get_versions(versions_url, token=token, encodings=(auth_base64, not auth_base64))
    if not isinstance(versions, list):
        raise OcpiError("Your versions endpoint did not answer a list", status_code=UNABLE_TO_USE_CLIENT_API)
    chosen = next((v for v in versions if isinstance(v, dict) and v.get("version") == OCPI_VERSION), None)
    if chosen is None or not isinstance(chosen.get("url"), str):
        raise OcpiError(f"No OCPI {OCPI_VERSION} among your versions", status_code=UNSUPPORTED_VERSION)
    try:
        details, _ = ocpi_request("GET", chosen["url"], token=token, base64_encoded=encoded)
    except AdapterError as exc:
        raise OcpiError(f"Could not read your version details: {exc.message}",
                        status_code=UNABLE_TO_USE_CLIENT_API) from exc
    endpoints = details.get("endpoints") if isinstance(details, dict) else None
    if not isinstance(endpoints, list):
        raise OcpiError("Your version details list no endpoints", status_code=NO_MATCHING_ENDPOINTS)
    endpoints = [{"identifier": str(e.get("identifier")), "role": str(e.get("role", "")), "url": str(e.get("url"))}
                 for e in endpoints if isinstance(e, dict) and e.get("identifier") and e.get("url")]
    missing = [module for module in REQUIRED_MODULES if not any(e["identifier"] == module for e in endpoints)]
    if missing:
        raise OcpiError(f"Your version details lack: {', '.join(missing)}", status_code=NO_MATCHING_ENDPOINTS)
    return PeerVersion(versions_url=versions_url, version=OCPI_VERSION, endpoints=endpoints, auth_base64=encoded)


def _apply_peer(cpo: ChargePointOperator, peer: PeerVersion, roles: list[dict[str, Any]] | None) -> None:
    cpo.versions_url = peer.versions_url
    cpo.ocpi_version = peer.version
    cpo.ocpi_endpoints = peer.endpoints
    cpo.auth_base64 = peer.auth_base64
    receiver = next((e["url"] for e in peer.endpoints
                     if e["identifier"] == "chargingprofiles" and e["role"] in ("RECEIVER", "")), None)
    if receiver:
        cpo.chargingprofiles_url = receiver
    if roles is not None:
        cpo.ocpi_roles = roles


# --- the CPO registers at us ---------------------------------------------------------------------------------


@transaction.atomic
def token_a_issue(*, cpo: ChargePointOperator, actor: Any = None) -> str:
    """A fresh registration token A for a CPO that will register at us; returned once, stored encrypted."""
    locked = ChargePointOperator.objects.select_for_update().get(pk=cpo.pk)
    if locked.registration == Registration.REGISTERED:
        raise TransitionError(f"{locked} is registered; unregister it before issuing a new token A.")
    token = new_token()
    locked.token_a = token
    locked.registration = Registration.TOKEN_A_ISSUED
    locked.save(update_fields=["token_a", "registration", "updated_at"])
    audit_record(obj=locked, action="ocpi.token_a.issued", actor=actor, actor_label="" if actor else OCPI_ACTOR)
    return token


def credentials_post(*, cpo: ChargePointOperator, body: Any) -> dict[str, Any]:
    """POST credentials with token A: read the CPO's endpoints with its token B, answer with a fresh token C."""
    if cpo.registration == Registration.REGISTERED:
        raise OcpiError("Already registered: use PUT to update", status_code=2000, http_status=405)
    token_b, versions_url, roles = _validated_credentials(body)
    peer = fetch_peer_version(versions_url=versions_url, token=token_b, auth_base64=cpo.auth_base64)
    return _complete_registration(cpo=cpo, token_b=token_b, peer=peer, roles=roles, action="ocpi.registered")


def credentials_put(*, cpo: ChargePointOperator, body: Any) -> dict[str, Any]:
    """PUT credentials (registered CPO): new token B, re-read its endpoints, issue a new token C."""
    if cpo.registration != Registration.REGISTERED:
        raise OcpiError("Not registered: use POST", status_code=2000, http_status=405)
    token_b, versions_url, roles = _validated_credentials(body)
    peer = fetch_peer_version(versions_url=versions_url, token=token_b, auth_base64=cpo.auth_base64)
    return _complete_registration(cpo=cpo, token_b=token_b, peer=peer, roles=roles, action="ocpi.credentials_updated")


@transaction.atomic
def _complete_registration(*, cpo: ChargePointOperator, token_b: str, peer: PeerVersion,
                           roles: list[dict[str, Any]], action: str) -> dict[str, Any]:
    locked = ChargePointOperator.objects.select_for_update().get(pk=cpo.pk)
    token_c = new_token()
    _apply_peer(locked, peer, roles)
    locked.token_for_cpo = token_b
    locked.token_from_cpo = token_c
    locked.token_a = ""  # token A is dead from now on
    locked.registration = Registration.REGISTERED
    locked.save()
    audit_record(obj=locked, action=action, actor_label=f"cpo:{locked.country_code}*{locked.party_id}",
                 after={"versions_url": peer.versions_url, "version": peer.version,
                        "modules": sorted({e["identifier"] for e in peer.endpoints})})
    return our_credentials(cpo=locked, token=token_c)


@transaction.atomic
def credentials_delete(*, cpo: ChargePointOperator) -> None:
    """DELETE credentials: unregister; both tokens die, traffic stops."""
    locked = ChargePointOperator.objects.select_for_update().get(pk=cpo.pk)
    if locked.registration != Registration.REGISTERED:
        raise OcpiError("Not registered", status_code=2000, http_status=405)
    _unregister(locked, action="ocpi.unregistered_by_cpo")


def _unregister(cpo: ChargePointOperator, *, action: str, actor: Any = None) -> None:
    cpo.token_for_cpo = ""
    cpo.token_from_cpo = ""
    cpo.token_a = ""
    cpo.registration = Registration.UNREGISTERED
    cpo.save()
    audit_record(obj=cpo, action=action, actor=actor, actor_label="" if actor else OCPI_ACTOR)


# --- we register at the CPO ----------------------------------------------------------------------------------


def _post_or_put_credentials(*, cpo: ChargePointOperator, method: str, token: str, token_b: str,
                             peer: PeerVersion) -> dict[str, Any]:
    url = next((e["url"] for e in peer.endpoints if e["identifier"] == "credentials"), None)
    assert url is not None  # fetch_peer_version requires it
    try:
        data, _ = ocpi_request(method, url, token=token, base64_encoded=peer.auth_base64,
                               json=our_credentials(cpo=cpo, token=token_b))
    except AdapterError as exc:
        raise ApplicationError(f"{method} credentials at {url} failed: {exc.message}", code="ocpi_registration_failed",
                               field="versions_url") from exc
    token_c, versions_url, roles = _credentials_answer(data)
    return {"token_c": token_c, "versions_url": versions_url, "roles": roles}


def _credentials_answer(data: Any) -> tuple[str, str, list[dict[str, Any]]]:
    try:
        return _validated_credentials(data)
    except OcpiError as exc:
        raise ApplicationError(f"The CPO answered an invalid Credentials object: {exc.message}",
                               code="ocpi_registration_failed") from exc


def register_with_cpo(*, cpo: ChargePointOperator, versions_url: str, token_a: str, actor: Any = None
                      ) -> ChargePointOperator:
    """We start the handshake at the CPO with the token A it gave us out of band."""
    if cpo.registration == Registration.REGISTERED:
        raise TransitionError(f"{cpo} is already registered; rotate or unregister first.")
    try:
        peer = fetch_peer_version(versions_url=versions_url, token=token_a, auth_base64=cpo.auth_base64)
    except OcpiError as exc:
        raise ApplicationError(exc.message, code="ocpi_registration_failed", field="versions_url") from exc
    token_b = new_token()
    # Token B must be known (committed) before the POST: the CPO reads our versions with it before answering.
    cpo.token_from_cpo = token_b
    cpo.token_a = ""
    cpo.save()
    answer = _post_or_put_credentials(cpo=cpo, method="POST", token=token_a, token_b=token_b, peer=peer)
    return _store_answer(cpo=cpo, peer=peer, answer=answer, action="ocpi.registered_at_cpo", actor=actor)


def rotate_at_cpo(*, cpo: ChargePointOperator, actor: Any = None) -> ChargePointOperator:
    """PUT our credentials with a fresh token B; the CPO answers with a fresh token C (OCPI advises monthly)."""
    if cpo.registration != Registration.REGISTERED or not cpo.token_for_cpo:
        raise TransitionError(f"{cpo} is not registered.")
    try:
        peer = fetch_peer_version(versions_url=cpo.versions_url, token=cpo.token_for_cpo, auth_base64=cpo.auth_base64)
    except OcpiError as exc:
        raise ApplicationError(exc.message, code="ocpi_registration_failed", field="versions_url") from exc
    token_b = new_token()
    previous_b = cpo.token_from_cpo
    cpo.token_from_cpo = token_b
    cpo.save()
    try:
        answer = _post_or_put_credentials(cpo=cpo, method="PUT", token=cpo.token_for_cpo, token_b=token_b, peer=peer)
    except ApplicationError:
        cpo.token_from_cpo = previous_b  # the CPO did not take the new token: keep the old one working
        cpo.save()
        raise
    return _store_answer(cpo=cpo, peer=peer, answer=answer, action="ocpi.credentials_rotated", actor=actor)


@transaction.atomic
def _store_answer(*, cpo: ChargePointOperator, peer: PeerVersion, answer: dict[str, Any], action: str,
                  actor: Any) -> ChargePointOperator:
    locked = ChargePointOperator.objects.select_for_update().get(pk=cpo.pk)
    _apply_peer(locked, peer, answer["roles"])
    locked.token_for_cpo = answer["token_c"]
    locked.registration = Registration.REGISTERED
    locked.save()
    audit_record(obj=locked, action=action, actor=actor, actor_label="" if actor else OCPI_ACTOR,
                 after={"versions_url": peer.versions_url, "registered_at": clock.now().isoformat()})
    return locked


def unregister_at_cpo(*, cpo: ChargePointOperator, actor: Any = None) -> ChargePointOperator:
    """DELETE our credentials at the CPO, then forget both tokens (a CPO that is already gone is forgotten too)."""
    if cpo.registration != Registration.REGISTERED:
        raise TransitionError(f"{cpo} is not registered.")
    url = next((e["url"] for e in cpo.ocpi_endpoints or [] if e.get("identifier") == "credentials"), None)
    if url:
        try:
            ocpi_request("DELETE", url, token=cpo.token_for_cpo, base64_encoded=cpo.auth_base64)
        except AdapterError as exc:
            if exc.status_code not in (401, 405):
                raise ApplicationError(f"DELETE credentials failed: {exc.message}", code="ocpi_unregister_failed"
                                       ) from exc
            logger.warning("%s: DELETE credentials answered %s; unregistering locally", cpo, exc.status_code)
    with transaction.atomic():
        locked = ChargePointOperator.objects.select_for_update().get(pk=cpo.pk)
        _unregister(locked, action="ocpi.unregistered_at_cpo", actor=actor)
    return locked
