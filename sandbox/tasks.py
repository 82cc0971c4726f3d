"""Sandbox tasks: the simulated CPO's asynchronous callbacks."""

from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, max_retries=5, acks_late=True)
def post_profile_result_task(self, profile_id: int) -> str:  # type: ignore[no-untyped-def]
    """POST the charger's ChargingProfileResult to the aggregator's response_url."""
    from aggregator.adapters.ocpi import token_header
    from common import time as clock
    from common.exceptions import AdapterError
    from common.http import http_request
    from sandbox.models import SandboxChargingProfile

    profile = SandboxChargingProfile.objects.select_related("client").get(pk=profile_id)
    if profile.result_posted_at:
        return profile.async_result
    result = "ACCEPTED"
    try:
        http_request("POST", profile.response_url, json={"result": result},
                     headers={"Authorization": token_header(profile.client.token_for_client)})
    except AdapterError as exc:
        if exc.permanent:
            raise
        raise self.retry(exc=exc, countdown=2 ** self.request.retries) from exc
    SandboxChargingProfile.objects.filter(pk=profile_id).update(async_result=result, result_posted_at=clock.now())
    return result
