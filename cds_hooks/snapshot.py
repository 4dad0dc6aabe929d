"""Placeholder: builds the PatientSnapshot (replaced by the prefetch/FHIR-server work)."""

from __future__ import annotations

from cds_hooks.config import Settings
from cds_hooks.model import DataKind, HookRequest, Patient, PatientSnapshot


def assemble_snapshot(request: HookRequest, settings: Settings) -> PatientSnapshot:
    del settings
    return PatientSnapshot(
        patient=Patient(id=request.patient_id),
        unavailable=frozenset(DataKind) - {DataKind.PATIENT},
    )
