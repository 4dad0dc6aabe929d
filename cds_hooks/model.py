"""The internal representation every stage after parsing works on.

FHIR arrives in three versions (DSTU2, STU3, R4) and several client dialects; the
normalisers in ``cds_hooks.fhir`` turn all of them into these plain, immutable
values so the clinical engine never sees a version difference. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NamedTuple

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"


class FhirVersion(StrEnum):
    DSTU2 = "DSTU2"
    STU3 = "STU3"
    R4 = "R4"


class Topic(StrEnum):
    """One code per rule family (``source.topic``); EHRs filter and report on these."""

    RENAL_DOSE = "renal-dose"
    RENAL_FUNCTION_UNKNOWN = "renal-function-unknown"
    DIALYSIS = "dialysis"
    MAX_DAILY_DOSE = "max-daily-dose"
    TITRATION = "titration"
    PEDIATRIC = "pediatric"
    GERIATRIC = "geriatric"
    AGE_UNKNOWN = "age-unknown"
    CNS_DEPRESSANT = "cns-depressant"
    INTERACTION = "interaction"
    ROUTE = "route"
    INTRATHECAL_DOSE = "intrathecal-dose"
    WITHDRAWAL = "withdrawal"
    DUPLICATE_THERAPY = "duplicate-therapy"
    DOSE_UNKNOWN = "dose-unknown"
    CONDITION_CAUTION = "condition-caution"
    DECEASED = "deceased"


class Indicator(StrEnum):
    """CDS Hooks card indicator; the order of ``SEVERITY`` ranks them."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Indicator.INFO: 0, Indicator.WARNING: 1, Indicator.CRITICAL: 2}


class Coding(NamedTuple):
    """A Coding. Codings and concepts are named tuples: they key every memo of drug and
    condition lookups, and a tuple hashes and compares in C where a dataclass runs Python."""

    system: str | None
    code: str | None
    display: str | None = None


class Concept(NamedTuple):
    """A CodeableConcept: codings plus free text (either may be empty)."""

    codings: tuple[Coding, ...] = ()
    text: str | None = None

    def codes(self, system: str) -> tuple[str, ...]:
        return tuple(c.code for c in self.codings if c.system == system and c.code)

    @property
    def label(self) -> str | None:
        """Best human-readable name: text, else the first coding display."""
        if self.text:
            return self.text
        return next((c.display for c in self.codings if c.display), None)


@dataclass(frozen=True, slots=True)
class Quantity:
    value: float
    unit: str | None = None
    code: str | None = None
    system: str | None = None
    comparator: str | None = None

    @property
    def units(self) -> str | None:
        """UCUM code when present, else the human unit (sandbox sends code only)."""
        return self.code or self.unit


@dataclass(frozen=True, slots=True)
class Ratio:
    numerator: Quantity
    denominator: Quantity


@dataclass(frozen=True, slots=True)
class Timing:
    frequency: int | None = None
    frequency_max: int | None = None
    period: float | None = None
    period_max: float | None = None
    period_unit: str | None = None
    when: tuple[str, ...] = ()
    code: Concept | None = None
    count: int | None = None
    bounds_start: str | None = None
    bounds_end: str | None = None


@dataclass(frozen=True, slots=True)
class DosageInstruction:
    """One dosage instruction.

    ``rate`` is an infusion or pump rate (FHIR ``rateQuantity``/``rateRatio``/``rateRange``)
    as one Quantity per unit of time: its ``code``/``unit`` is a UCUM-style rate unit,
    amount over time ("ug/h", "mg/d", "mL/h", "ug/(24.h)"). A ``rateRatio`` is folded
    into that form (400 ug per 1 d → 400 "ug/d"; per 12 h → "ug/(12.h)") and a
    ``rateRange`` gives its high end, the safer side for a maximum-dose check.
    """

    text: str | None = None
    sequence: int | None = None
    dose: Quantity | None = None
    dose_range_low: Quantity | None = None
    dose_range_high: Quantity | None = None
    timing: Timing | None = None
    as_needed: bool = False
    max_dose_per_period: Ratio | None = None
    max_dose_per_administration: Quantity | None = None
    route: Concept | None = None
    rate: Quantity | None = None


@dataclass(frozen=True, slots=True)
class MedicationProduct:
    """What a ``medicationReference`` resolved to (contained or bundled Medication)."""

    code: Concept
    form: Concept | None = None
    strength: Ratio | None = None


@dataclass(frozen=True, slots=True)
class MedicationOrder:
    """One medication order (draft or active), whatever the FHIR version or dialect.

    ``medication`` is ``None`` while the prescriber has not picked a drug yet (the
    sandbox sends such drafts on every keystroke). ``problems`` lists why parts of the
    order could not be read, so the engine can say so instead of passing silently.
    """

    reference: str
    resource_type: str
    fhir_version: FhirVersion
    status: str | None = None
    intent: str | None = None
    medication: Concept | None = None
    product: MedicationProduct | None = None
    dosages: tuple[DosageInstruction, ...] = ()
    authored_on: str | None = None
    prior_prescription: str | None = None
    problems: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def medication_label(self) -> str | None:
        if self.medication is not None and self.medication.label:
            return self.medication.label
        if self.product is not None:
            return self.product.code.label
        return None


@dataclass(frozen=True, slots=True)
class Patient:
    id: str
    birth_date: date | None = None
    gender: str | None = None
    deceased: date | bool = False
    """``deceased[x]``: False when not marked; the day of death, or True when no day is known."""


@dataclass(frozen=True, slots=True)
class Observation:
    """A lab or vital value; ``value`` is None when the result was not numeric."""

    id: str | None
    code: Concept
    value: Quantity | None
    effective: datetime | None
    status: str | None = None
    value_text: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    id: str | None
    code: Concept
    clinical_status: str | None = None
    verification_status: str | None = None


class DataKind(StrEnum):
    """The categories of patient data a hook call needs; discovery has one prefetch each."""

    PATIENT = "patient"
    RENAL_LABS = "renalLabs"
    WEIGHT = "weight"
    MEDICATIONS = "activeMedications"
    CONDITIONS = "conditions"


@dataclass(frozen=True, slots=True)
class PatientSnapshot:
    """Everything known about the patient for one call.

    ``unavailable`` names the kinds of data that could be obtained neither from
    prefetch nor from the FHIR server. The engine must treat those as unknown, never
    as normal (no eGFR is not a normal eGFR). ``unidentified_medications`` counts current
    orders whose drug could not be identified: the list is known, but not all of it.
    """

    patient: Patient
    observations: tuple[Observation, ...] = ()
    medications: tuple[MedicationOrder, ...] = ()
    conditions: tuple[Condition, ...] = ()
    unavailable: frozenset[DataKind] = frozenset()
    unidentified_medications: int = 0


@dataclass(frozen=True, slots=True)
class FhirAuthorization:
    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class HookRequest:
    """A hook call after normalisation, independent of hook dialect and FHIR version.

    ``draft_orders`` holds every unsigned order in the session; ``selected`` the
    references of those under evaluation (order-select: the selections; order-sign and
    medication-prescribe: all drafts). The engine counts every other drug drafted, selected
    or not, as a co-medication of the baclofen drafts.
    """

    hook: str
    hook_instance: str
    service_id: str
    patient_id: str
    user_id: str | None = None
    encounter_id: str | None = None
    fhir_server: str | None = None
    fhir_authorization: FhirAuthorization | None = field(default=None, repr=False)
    draft_orders: tuple[MedicationOrder, ...] = ()
    selected: tuple[str, ...] = ()
    prefetch: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    active_list: bool = False
    """patient-view: no drafts; the baclofen on the active medication list is judged."""
    cache_for_order_sign: bool = False
    """PDDI-CDS ``cache-for-order-sign-filtering`` (order-select): remember this call's cards
    so the order-sign that follows can leave out the ones already shown."""
    filter_repeated_alerts: bool = False
    """PDDI-CDS ``filter-out-repeated-alerts`` (order-sign): leave out the cards a cached
    order-select of the same session already showed."""

    @property
    def orders_under_review(self) -> tuple[MedicationOrder, ...]:
        chosen = set(self.selected)
        return tuple(o for o in self.draft_orders if o.reference in chosen)

    @property
    def other_drafts(self) -> tuple[MedicationOrder, ...]:
        chosen = set(self.selected)
        return tuple(o for o in self.draft_orders if o.reference not in chosen)
