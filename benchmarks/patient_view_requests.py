"""Build the two ``patient-view`` benchmark requests from ``data/order-sign-full-prefetch.json``.

``python benchmarks/patient_view_requests.py`` writes, next to it (see ``data/README.md``):

- ``patient-view-not-on-baclofen.json``: the same patient and full prefetch (Patient, 5
  renal labs, weight, 3 conditions, 20 active medications, six of them CNS depressants)
  as a ``patient-view`` call: context ``patientId`` and ``userId`` only, no draft. None of
  the 20 is baclofen: the common case, which the service must answer at little more than
  the cost of reading the request;
- ``patient-view-on-baclofen.json``: the same, with the benchmark's baclofen order (10 mg
  tablets, one three times a day) signed long ago and active in place of the naproxen
  order, so the list is still 20 long and the whole pipeline runs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
SOURCE = DATA / "order-sign-full-prefetch.json"
NOT_ON_BACLOFEN = DATA / "patient-view-not-on-baclofen.json"
ON_BACLOFEN = DATA / "patient-view-on-baclofen.json"
REPLACED = "Naproxen sodium 220 MG Oral Tablet"
SIGNED_ON = "2025-03-10"


def patient_view(order_sign: dict[str, Any]) -> dict[str, Any]:
    context = order_sign["context"]
    return {
        "hookInstance": order_sign["hookInstance"],
        "hook": "patient-view",
        "context": {"patientId": context["patientId"], "userId": context["userId"]},
        "prefetch": copy.deepcopy(order_sign["prefetch"]),
    }


def with_baclofen(request: dict[str, Any], draft: dict[str, Any]) -> dict[str, Any]:
    request = copy.deepcopy(request)
    signed = {**draft, "id": "baclofen-1", "status": "active", "authoredOn": SIGNED_ON}
    entries = request["prefetch"]["activeMedications"]["entry"]
    (index,) = (
        i
        for i, entry in enumerate(entries)
        if entry["resource"].get("medicationCodeableConcept", {}).get("text") == REPLACED
    )
    entries[index] = {**entries[index], "resource": signed}
    return request


def main() -> None:
    order_sign = json.loads(SOURCE.read_text(encoding="utf-8"))
    (draft,) = (e["resource"] for e in order_sign["context"]["draftOrders"]["entry"])
    silent = patient_view(order_sign)
    for path, request in ((NOT_ON_BACLOFEN, silent), (ON_BACLOFEN, with_baclofen(silent, draft))):
        path.write_text(json.dumps(request, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
