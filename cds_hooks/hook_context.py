"""Placeholder: parses the hook request body into a HookRequest (replaced by the FHIR work)."""

from __future__ import annotations

from typing import Any

from cds_hooks.discovery import ServiceDefinition
from cds_hooks.errors import BadRequest
from cds_hooks.model import HookRequest


def parse_hook_request(body: Any, service: ServiceDefinition) -> HookRequest:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if body.get("hook") != service.hook:
        raise BadRequest(f"Service {service.id} answers the {service.hook} hook.", expression="hook")
    context = body.get("context")
    if not isinstance(context, dict) or not isinstance(context.get("patientId"), str):
        raise BadRequest("context.patientId is required.", expression="context.patientId")
    return HookRequest(
        hook=service.hook,
        hook_instance=str(body.get("hookInstance", "")),
        service_id=service.id,
        patient_id=context["patientId"],
    )
