"""Build ``data/order-sign-full-prefetch.json``, the request every benchmark point sends.

Run once by hand (``python benchmarks/build_request.py SYNTHEA_DIR HL7_DIR``); the output
is committed, so benchmarks never need the sources. What it makes, and why it is a fair
stand-in for an EHR's call (see ``data/README.md`` for origin and licences):

- an R4 ``order-sign`` request for Synthea patient Adalberto Hartmann (born 1949, alive);
- one draft baclofen order (10 mg tablet, 1 tablet three times a day);
- every prefetch key we advertise: the Patient, his 5 newest renal labs (eGFR and serum
  creatinine), his newest body weight, 3 conditions, and 20 active MedicationRequests as
  searchset Bundles. The medications are his own active and stopped orders, orders of the
  two other Synthea patients and three HL7 examples, all re-pointed at him: mostly drugs
  irrelevant to baclofen, plus a few CNS depressants (diazepam, oxycodone, fentanyl,
  chlorpheniramine, doxylamine, diphenhydramine).

``urn:uuid:`` references of the Synthea transaction bundles are rewritten as relative
``Type/id`` references, as a FHIR server would return them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "data" / "order-sign-full-prefetch.json"
BASE = "https://ehr.example.org/fhir"
PATIENT_FILE = "Adalberto_Hartmann_44ec4447-9e2c-4eb9-bd4f-0bdb416b806e.json"
OTHER_FILES = (
    "Evelyn_McCullough_b3e8d121-f742-438c-92e3-02135e4543d5.json",
    "Louis_Maggio_2e275d4b-855a-4eb2-9021-5410aa8acd4f.json",
)
HL7_MEDICATIONS = (
    "medicationrequest0310.json",  # Tylenol PM (diphenhydramine), a contained Medication
    "medicationrequest0327.json",  # fentanyl patch
    "medicationrequest0331.json",  # warfarin
)
RENAL_CODES = {"33914-3", "2160-0", "38483-4"}
WEIGHT_CODE = "29463-7"
CONDITION_COUNT = 3
MEDICATION_COUNT = 20
LAB_COUNT = 5

DRAFT = {
    "resourceType": "MedicationRequest",
    "id": "draft-baclofen-1",
    "status": "draft",
    "intent": "order",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "outpatient",
                }
            ]
        }
    ],
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "197391",
                "display": "Baclofen 10 MG Oral Tablet",
            }
        ],
        "text": "Baclofen 10 MG Oral Tablet",
    },
    "authoredOn": "2026-11-22",
    "dosageInstruction": [
        {
            "text": "1 tablet by mouth three times a day",
            "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
            "route": {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral"}
                ]
            },
            "doseAndRate": [
                {
                    "doseQuantity": {
                        "value": 1,
                        "unit": "tablet",
                        "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                        "code": "TAB",
                    }
                }
            ],
        }
    ],
    "dispenseRequest": {
        "quantity": {"value": 90, "unit": "tablet"},
        "expectedSupplyDuration": {
            "value": 30,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        },
    },
}


def load_bundle(path: Path) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in json.loads(path.read_text())["entry"]]


def relink(node: Any, types: dict[str, str]) -> Any:
    """Rewrite ``urn:uuid:X`` references to ``Type/X`` (and drop Synthea's meta tags)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "meta":
                continue
            if key == "reference" and isinstance(value, str) and value.startswith("urn:uuid:"):
                uuid = value.removeprefix("urn:uuid:")
                value = f"{types.get(uuid, 'Resource')}/{uuid}"
            out[key] = relink(value, types)
        return out
    if isinstance(node, list):
        return [relink(item, types) for item in node]
    return node


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def codes(resource: dict[str, Any]) -> set[str]:
    return {c.get("code") for c in resource.get("code", {}).get("coding", [])}


def newest(resources: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return sorted(resources, key=lambda r: r.get("effectiveDateTime", ""), reverse=True)[:count]


def build(synthea: Path, hl7: Path) -> dict[str, Any]:
    own = load_bundle(synthea / PATIENT_FILE)
    others = [r for name in OTHER_FILES for r in load_bundle(synthea / name)]
    types = {r["id"]: r["resourceType"] for r in own + others}
    patient = relink(next(r for r in own if r["resourceType"] == "Patient"), types)
    subject = {"reference": f"Patient/{patient['id']}"}

    observations = [relink(r, types) for r in own if r["resourceType"] == "Observation"]
    labs = newest([o for o in observations if codes(o) & RENAL_CODES], LAB_COUNT)
    weight = newest([o for o in observations if WEIGHT_CODE in codes(o)], 1)
    conditions = [relink(r, types) for r in own if r["resourceType"] == "Condition"]
    active_conditions = [
        c
        for c in conditions
        if c.get("clinicalStatus", {}).get("coding", [{}])[0].get("code") == "active"
    ][:CONDITION_COUNT]

    medications: list[dict[str, Any]] = []
    seen: set[str] = set()
    for resource in own + others:
        if resource["resourceType"] != "MedicationRequest":
            continue
        drug = resource["medicationCodeableConcept"]["coding"][0]["code"]
        if drug in seen:
            continue
        seen.add(drug)
        medication = relink(resource, types)
        medication["status"] = "active"
        medication["subject"] = subject
        medications.append(medication)
    for name in HL7_MEDICATIONS:
        medication = relink(json.loads((hl7 / name).read_text()), types)
        medication.pop("text", None)  # the examples' XHTML narrative; EHR searches rarely carry it
        medication["status"] = "active"
        medication["subject"] = subject
        medications.append(medication)
    medications = medications[:MEDICATION_COUNT]
    if len(medications) != MEDICATION_COUNT:
        raise SystemExit(f"only {len(medications)} medications found")

    draft = {**DRAFT, "subject": subject}
    return {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "hook": "order-sign",
        "context": {
            "userId": "Practitioner/benchmark-prescriber",
            "patientId": patient["id"],
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft}],
            },
        },
        "prefetch": {
            "patient": patient,
            "renalLabs": searchset(labs),
            "weight": searchset(weight),
            "activeMedications": searchset(medications),
            "conditions": searchset(active_conditions),
        },
    }


def main() -> None:
    synthea, hl7 = (Path(arg) for arg in sys.argv[1:3])
    request = build(synthea, hl7)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(request, separators=(",", ":")) + "\n")
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
