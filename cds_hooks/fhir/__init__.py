"""FHIR (DSTU2, STU3, R4) resources in, internal model values out; every function is pure.

The snapshot and hook-context code call only what is exported here.
"""

from __future__ import annotations

from cds_hooks.fhir.bundles import bundle_entries, bundle_resources, medication_index
from cds_hooks.fhir.medication import ORDER_TYPES, medication_concept, medication_order
from cds_hooks.fhir.resources import condition, observation, observation_effective, patient


def warm_up() -> None:
    """Import and build the validators up front (well under a second, once per process).

    Without it the first hook call after start-up pays that cost; call it from the app
    factory or a worker's post-fork hook.
    """
    drug = {"text": "warm-up"}
    medication_order(
        {
            "resourceType": "MedicationRequest",
            "medicationCodeableConcept": drug,
            "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 1}}]}],
        }
    )
    medication_order(
        {
            "resourceType": "MedicationRequest",
            "medicationCodeableConcept": drug,
            "dosageInstruction": [{"doseQuantity": {"value": 1}}],
        }
    )
    medication_order(
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": drug}, drug_only=True
    )
    patient({"resourceType": "Patient", "id": "warm-up"})
    observation({"resourceType": "Observation", "status": "final", "code": drug})
    condition({"resourceType": "Condition", "code": drug, "subject": {"reference": "Patient/x"}})


__all__ = [
    "ORDER_TYPES",
    "bundle_entries",
    "bundle_resources",
    "condition",
    "medication_concept",
    "medication_index",
    "medication_order",
    "observation",
    "observation_effective",
    "patient",
    "warm_up",
]
