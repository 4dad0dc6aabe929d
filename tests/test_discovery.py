"""Discovery: what an EHR or the sandbox sees when it registers the service."""

from __future__ import annotations

from flask.testing import FlaskClient

from cds_hooks.knowledge import observation_codes


def test_one_distinct_service_per_hook(client: FlaskClient) -> None:
    services = client.get("/cds-services").get_json()["services"]
    hooks = {s["hook"]: s for s in services}
    assert set(hooks) == {"order-select", "order-sign", "medication-prescribe", "patient-view"}
    assert len({s["id"] for s in services}) == 4
    assert "deprecated" in hooks["medication-prescribe"]["description"].lower()
    for service in services:
        assert service["title"] and service["description"]


def test_prefetch_templates_cover_patient_labs_weight_meds_conditions(client: FlaskClient) -> None:
    service = client.get("/cds-services").get_json()["services"][0]
    prefetch = service["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    labs = prefetch["renalLabs"]
    for loinc in ("98979-8", "62238-1", "33914-3", "2160-0", "35591-7"):
        assert f"http://loinc.org|{loinc}" in labs
    assert "_sort=-date" in labs and "_count=" in labs
    # One page reaches back over the kidney injury window at creatinine + eGFR every 6 h.
    window = observation_codes().creatinine_rise.history_days
    assert int(labs.rsplit("_count=", 1)[1]) >= (window + 1) * 4 * 2
    assert "29463-7" in prefetch["weight"]
    assert prefetch["activeMedications"].startswith(
        "MedicationRequest?patient={{context.patientId}}"
    )
    assert "status=active" in prefetch["activeMedications"]
    assert prefetch["conditions"].startswith("Condition?patient={{context.patientId}}")
    for template in prefetch.values():
        assert "{{context.patientId}}" in template
