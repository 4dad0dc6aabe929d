"""Memory stays bounded whatever a caller sends: memos do not keep large unique inputs.

Drug and condition answers are memoised on the concept or its JSON (the same drugs recur
across patients). A memo bounded in entries alone grew a worker by about 4 MB for every
unique 500 kB drug name, past the container's memory limit within a few hundred requests;
the memos now answer long input afresh (``cds_hooks.memo``). This sends unique large
names to the real served process and reads its worker's resident memory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import requests

from tests.served import serve

DATA = Path(__file__).parent / "data" / "requests"
REQUESTS = 80
NAME_BYTES = 500_000
GROWTH_BOUND_MB = 60
"""Resident-memory growth allowed over the run; without the bound it was about 4 MB a
request (over 300 MB here). Some growth is the allocator keeping freed arenas."""


def _with_unique_names(body: dict[str, Any], index: int) -> dict[str, Any]:
    """The captured call plus an active order and a second draft named by unique long text."""
    name = f"{index:06d} " + "x" * NAME_BYTES
    body = copy.deepcopy(body)
    drug = {"text": name}
    body["prefetch"]["otherMeds"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": f"big-{index}",
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": drug,
                }
            }
        ],
    }
    body["context"]["draftOrders"]["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": f"draft-big-{index}",
                "status": "draft",
                "intent": "order",
                "medicationCodeableConcept": drug,
            }
        }
    )
    return body


def _worker_rss_mb(master_pid: int) -> float:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    (worker,) = children
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_unique_large_drug_names_do_not_grow_the_worker(tmp_path: Path) -> None:
    captured = json.loads((DATA / "sandbox-order-sign-baclofen10-3tab-daily.json").read_text())
    body = captured["body"]
    with serve(tmp_path, workers=1, env={"CDS_MAX_BODY_BYTES": "4194304"}) as (base, _, server):
        url = f"{base}/cds-services/baclofen-order-sign"
        with requests.Session() as session:
            for index in range(REQUESTS):
                response = session.post(url, json=_with_unique_names(body, index), timeout=30)
                assert response.status_code == 200, response.text[:300]
                if index == 9:
                    warmed = _worker_rss_mb(server.pid)
            grown = _worker_rss_mb(server.pid) - warmed
    assert grown < GROWTH_BOUND_MB, f"worker grew {grown:.0f} MB over {REQUESTS - 10} requests"
