"""Builds CDS Hooks requests for tests: scenario-table rows and Synthea bundles → R4 bodies.

Shared by the scenario, card and Synthea tests so each posts what an EHR would send.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask.testing import FlaskClient

from cds_hooks.model import ICD10CM, LOINC, RXNORM, SNOMED, UCUM
from tests.cds_checks import empty_optional_values

SERVICES = {
    "order-sign": "baclofen-order-sign",
    "order-select": "baclofen-order-select",
    "medication-prescribe": "baclofen-medication-prescribe",
    "patient-view": "baclofen-patient-view",
}
ROUTES = {
    "oral": ("26643006", "Oral route"),
    "intrathecal": ("72607000", "Intrathecal route"),
    "intravenous": ("47625008", "Intravenous route"),
}
PATIENT_ID = "scenario-patient"
TOPIC_SYSTEM = "https://baclofen-cds.org/CodeSystem/card-topic"


def _birth_date(age: int, today: date) -> str:
    """A birthday yesterday (or the day before a leap day), so the patient is exactly ``age``."""
    day = today - timedelta(days=1)
    try:
        return day.replace(year=day.year - age).isoformat()
    except ValueError:
        return (day - timedelta(days=1)).replace(year=day.year - age).isoformat()


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def medication_request(spec: dict[str, Any], status: str, today: date) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": spec["id"],
        "status": spec.get("status", status),
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }
    if "authored_days_ago" in spec:
        written = today - timedelta(days=spec["authored_days_ago"])
        resource["authoredOn"] = f"{written.isoformat()}T09:30:00Z"
    if "name" in spec:
        coding = {"system": RXNORM, "code": spec["rxnorm"]} if "rxnorm" in spec else {}
        resource["medicationCodeableConcept"] = {
            **({"coding": [{**coding, "display": spec["name"]}]} if coding else {}),
            "text": spec["name"],
        }
    if "medication" in spec:
        resource["medicationReference"] = {"reference": f"Medication/{spec['medication']}"}
    if "replaces" in spec:
        resource["priorPrescription"] = {"reference": f"MedicationRequest/{spec['replaces']}"}
    dosage: dict[str, Any] = {}
    if "route" in spec:
        code, display = ROUTES[spec["route"]]
        dosage["route"] = {"coding": [{"system": SNOMED, "code": code, "display": display}]}
    if "frequency" in spec:
        repeat = {
            "frequency": spec["frequency"],
            "period": spec.get("period", 1),
            "periodUnit": spec.get("period_unit", "d"),
        }
        dosage["timing"] = {"repeat": repeat}
    elif "count" in spec:
        dosage["timing"] = {"repeat": {"count": spec["count"]}}
    if "dose" in spec:
        quantity = {"value": spec["dose"], "system": UCUM, "code": spec["unit"]}
        dosage["doseAndRate"] = [{"doseQuantity": quantity}]
    if dosage:
        resource["dosageInstruction"] = [dosage]
    return resource


def medication(spec: dict[str, Any]) -> dict[str, Any]:
    coding = [{"system": RXNORM, "code": spec["rxnorm"], "display": spec["name"]}]
    return {
        "resourceType": "Medication",
        "id": spec["id"],
        "code": {**({"coding": coding} if "rxnorm" in spec else {}), "text": spec["name"]},
    }


def observation(spec: dict[str, Any], today: date, index: int) -> dict[str, Any]:
    quantity = {"value": spec["value"], "unit": spec["unit"], "system": UCUM, "code": spec["unit"]}
    if "comparator" in spec:
        quantity["comparator"] = spec["comparator"]
    if "hours_ago" in spec:
        when = datetime.combine(today, time(), UTC) - timedelta(hours=spec["hours_ago"])
    else:
        when = datetime.combine(today - timedelta(days=spec["days_ago"]), time(8), UTC)
    return {
        "resourceType": "Observation",
        "id": f"obs-{index}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": spec["loinc"]}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when.isoformat().replace("+00:00", "Z"),
        "valueQuantity": quantity,
    }


def condition(spec: dict[str, Any], index: int) -> dict[str, Any]:
    system, code = (SNOMED, spec["snomed"]) if "snomed" in spec else (ICD10CM, spec["icd10"])
    return {
        "resourceType": "Condition",
        "id": f"cond-{index}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": spec.get("clinical_status", "active"),
                }
            ]
        },
        "code": {
            "coding": [{"system": system, "code": code, "display": spec["text"]}],
            "text": spec["text"],
        },
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


def build_request(scenario: dict[str, Any], today: date) -> dict[str, Any]:
    hook = scenario.get("hook", "order-sign")
    person = scenario["patient"]
    patient: dict[str, Any] = {"resourceType": "Patient", "id": PATIENT_ID}
    if "age" in person:
        patient["birthDate"] = _birth_date(person["age"], today)
    if "sex" in person:
        patient["gender"] = person["sex"]
    if "deceased_days_ago" in person:
        died = today - timedelta(days=person["deceased_days_ago"])
        patient["deceasedDateTime"] = f"{died.isoformat()}T14:30:00+01:00"
    if "deceased" in person:
        patient["deceasedBoolean"] = person["deceased"]
    drafts = [medication_request(d, "draft", today) for d in scenario.get("drafts", [])]
    labs = [observation(o, today, i) for i, o in enumerate(scenario.get("labs", []))]
    renal = [o for o in labs if o["code"]["coding"][0]["code"] != "29463-7"]
    weights = [o for o in labs if o["code"]["coding"][0]["code"] == "29463-7"]
    prefetch: dict[str, Any] = {"patient": patient, "weight": _bundle(weights)}
    if scenario.get("conditions_prefetch", True):
        prefetch["conditions"] = _bundle(
            [condition(c, i) for i, c in enumerate(scenario.get("conditions", []))]
        )
    if scenario.get("renal_prefetch", True):
        prefetch["renalLabs"] = _bundle(renal)
    if scenario.get("medications_prefetch", True):
        prefetch["activeMedications"] = _bundle(
            [medication_request(m, "active", today) for m in scenario.get("active", [])]
            + [medication(m) for m in scenario.get("medications", [])]
        )
    context: dict[str, Any] = {"patientId": PATIENT_ID, "userId": "Practitioner/scenario"}
    if hook != "patient-view":  # patient-view has no drafts: its context is the patient
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": d} for d in drafts],
        }
    if hook == "order-select":
        context["selections"] = [
            f"MedicationRequest/{d['id']}" for d in scenario["drafts"] if d.get("selected", True)
        ]
    return {
        "hookInstance": str(uuid.uuid4()),
        "hook": hook,
        "context": context,
        "prefetch": prefetch,
    }


def post(client: FlaskClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(f"/cds-services/{SERVICES[body['hook']]}", json=body)
    assert response.status_code == 200, response.get_json()
    payload = response.get_json()
    assert set(payload) == {"cards"}
    assert not empty_optional_values(payload), empty_optional_values(payload)
    for card in payload["cards"]:
        assert len(card["summary"]) < 140
        assert card["source"]["topic"]["system"] == TOPIC_SYSTEM
    return payload["cards"]
