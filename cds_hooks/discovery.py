"""The four CDS services we advertise, one per hook, and what each asks to prefetch.

The sandbox keys services by id, so each hook gets a distinct id. Three check baclofen
while it is being ordered; ``patient-view`` checks the baclofen a patient is already
taking (the active list) whenever the chart is opened. Prefetch templates
use only ``{{context.patientId}}`` (the one token every client expands) and bounded,
newest-first searches, so the EHR sends a small, predictable payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds_hooks.knowledge import observation_codes
from cds_hooks.model import LOINC, DataKind

PATIENT = "{{context.patientId}}"
RENAL_RESULTS_PER_DAY = 8
"""Kidney results a day at most in hospital: creatinine with its eGFR, every 6 hours."""
MEDICATION_COUNT = 100
CONDITION_COUNT = 100


PDDI_ITEMS = "pddi-configuration-items"
PDDI_CACHE = "cache-for-order-sign-filtering"
PDDI_FILTER = "filter-out-repeated-alerts"
_PDDI_CACHE_ITEM = {
    "code": PDDI_CACHE,
    "type": "boolean",
    "name": "Cache for order-sign filtering",
    "description": "true: remember this call's cards so that an order-sign of the same "
    "patient, drug, user and encounter sent with filter-out-repeated-alerts leaves out the "
    "same advice. Default false.",
}
_PDDI_FILTER_ITEM = {
    "code": PDDI_FILTER,
    "type": "boolean",
    "name": "Filter out repeated alerts",
    "description": "true: leave out the advice an order-select sent with "
    "cache-for-order-sign-filtering already showed (never route, dialysis, withdrawal or "
    "intrathecal dose cards). Default false: nothing is left out.",
}


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    active_list: bool = False
    """Judges the baclofen on the patient's active medication list, not draft orders."""
    configuration: tuple[dict[str, str], ...] = field(default=())
    """The HL7 PDDI-CDS configuration items the service honours in a request's
    ``extension`` (advertised as that IG's discovery example does)."""

    def discovery_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": prefetch_templates(),
            "usageRequirements": USAGE_REQUIREMENTS,
        }
        if self.configuration:
            entry["extension"] = {PDDI_ITEMS: [dict(item) for item in self.configuration]}
        return entry


USAGE_REQUIREMENTS = (
    "Send the prefetch keys, or fhirServer with fhirAuthorization so the service can fetch "
    "them. Without kidney function data the service says so on a card; it never assumes "
    "normal kidneys."
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="baclofen-order-select",
        hook="order-select",
        title="Baclofen dose check (order select)",
        description=(
            "Checks the selected baclofen order against kidney function, age, route, "
            "titration and co-prescribed CNS depressants, and proposes a safe dose."
        ),
        configuration=(_PDDI_CACHE_ITEM,),
    ),
    ServiceDefinition(
        id="baclofen-order-sign",
        hook="order-sign",
        title="Baclofen dose check (order sign)",
        description=(
            "Checks every baclofen order about to be signed against kidney function, age, "
            "route, titration, withdrawal risk and co-prescribed CNS depressants."
        ),
        configuration=(_PDDI_FILTER_ITEM,),
    ),
    ServiceDefinition(
        id="baclofen-medication-prescribe",
        hook="medication-prescribe",
        title="Baclofen dose check (medication-prescribe, deprecated)",
        description=(
            "Deprecated hook kept for CDS Hooks 1.0 clients; use the order-select and "
            "order-sign services instead. Same checks as order-sign."
        ),
    ),
    ServiceDefinition(
        id="baclofen-patient-view",
        hook="patient-view",
        title="Baclofen safety on the active medication list (patient view)",
        description=(
            "When the chart is opened for a patient taking baclofen: a daily dose above the "
            "ceiling for the current kidney function, kidney function becoming unstable, "
            "long-term baclofen without a recent creatinine, and an opioid combined with "
            "another respiratory depressant. Silent for everyone else."
        ),
        active_list=True,
    ),
)

SERVICES_BY_ID = {service.id: service for service in SERVICES}


def _code_list(codes: tuple[str, ...]) -> str:
    return ",".join(f"{LOINC}|{code}" for code in codes)


def renal_lab_count() -> int:
    """Newest-first kidney results on one page: enough for the acute kidney injury window
    before the newest creatinine (and that creatinine's own day) at the hospital rate."""
    return (observation_codes().creatinine_rise.history_days + 1) * RENAL_RESULTS_PER_DAY


def prefetch_templates() -> dict[str, str]:
    codes = observation_codes()
    return {
        DataKind.PATIENT.value: f"Patient/{PATIENT}",
        DataKind.RENAL_LABS.value: (
            f"Observation?patient={PATIENT}&code={_code_list(codes.renal)}"
            f"&_sort=-date&_count={renal_lab_count()}"
        ),
        DataKind.WEIGHT.value: (
            f"Observation?patient={PATIENT}&code={_code_list(codes.body_weight)}&_sort=-date&_count=1"
        ),
        # The Medications that orders name by reference come along, so an opioid written
        # as medicationReference is not lost (FHIR R4 search: _include).
        DataKind.MEDICATIONS.value: (
            f"MedicationRequest?patient={PATIENT}&status=active&_count={MEDICATION_COUNT}"
            "&_include=MedicationRequest:medication"
        ),
        DataKind.CONDITIONS.value: f"Condition?patient={PATIENT}&_count={CONDITION_COUNT}",
    }


def discovery_document() -> dict[str, Any]:
    return {"services": [service.discovery_entry() for service in SERVICES]}
