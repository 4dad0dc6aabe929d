"""Where one hook call spends its time: cProfile over the real app, per-request microseconds.

``python benchmarks/profile_request.py [-n 200] [--top 25]`` builds the app as the load
benchmark runs it (development env, auth off), sends the benchmark request through the
Flask test client (whole stack minus HTTP and gunicorn) and prints, per request, the
CPU time of each pipeline stage and of each ``fhir.resources`` validation by resource
type (timed with wrappers, no profiler running), then cProfile's functions with the most
cumulative and own time (profiling inflates call-heavy Python code: use it to find the
culprits, the stage timings to size them).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib
import json
import os
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REQUEST = HERE / "data" / "order-sign-full-prefetch.json"
HOOK_PATH = "/cds-services/baclofen-order-sign"
STAGES = (
    # (module whose global name the stage is called through, name, label)
    ("cds_hooks.api", "read_json_body", "read_json_body"),
    ("cds_hooks.pipeline", "parse_hook_request", "hook_context.parse_hook_request"),
    ("cds_hooks.pipeline", "assemble_snapshot", "snapshot.assemble_snapshot"),
    ("cds_hooks.engine", "evaluate", "engine.evaluate"),
    ("cds_hooks.pipeline", "render_cards", "cards.render_cards"),
    ("cds_hooks.metrics", "count_cards", "metrics.count_cards"),
)
VALIDATE_CALLER = "cds_hooks.fhir.medication"
"""Orders are the only resources validated with fhir.resources (a whole MedicationRequest,
or its drug alone as a CodeableConcept); the rest is read, not validated."""


class Stopwatch:
    """CPU-time totals per label, for wrapping stage functions in this script only.

    CPU time of this thread rather than wall-clock, so other work on the machine barely
    moves the numbers.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(
        self, label: str | Callable[..., str], function: Callable[..., Any]
    ) -> Callable[..., Any]:
        """``label`` is a name, or a function of the call's arguments that returns one."""

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.thread_time() - started
                self.calls[name] += 1

        return timed


def _validation_label(resource: Any, *_: Any) -> str:
    return f"fhir.resources validation: {resource.get('resourceType')}"


def _element_label(_: Any, element_type: str, *__: Any) -> str:
    return f"fhir.resources validation: {element_type} (the drug alone)"


def instrument(stopwatch: Stopwatch) -> None:
    for module_name, name, label in STAGES:
        module = importlib.import_module(module_name)
        setattr(module, name, stopwatch.wrap(label, getattr(module, name)))
    module = importlib.import_module(VALIDATE_CALLER)
    module.validate = stopwatch.wrap(_validation_label, module.validate)  # type: ignore[attr-defined]
    module.validate_element = stopwatch.wrap(_element_label, module.validate_element)  # type: ignore[attr-defined]


def resources_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every FHIR resource in the request: draft orders and prefetch, Bundles opened."""
    found = []
    values = [request["context"].get("draftOrders"), *request.get("prefetch", {}).values()]
    for value in values:
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            found += [entry["resource"] for entry in value.get("entry", []) if "resource" in entry]
        else:
            found.append(value)
    return found


def print_validation_costs(request: dict[str, Any], repeat: int) -> None:
    """What validating every resource with fhir.resources (R4B models) would cost."""
    from fhir.resources.R4B import get_fhir_model_class

    per_type: dict[str, list[float]] = defaultdict(list)
    for resource in resources_of(request):
        model = get_fhir_model_class(resource["resourceType"])
        model.model_validate(resource)
        started = time.thread_time()
        for _ in range(repeat):
            model.model_validate(resource)
        per_type[resource["resourceType"]].append((time.thread_time() - started) / repeat * 1e6)
    print("fhir.resources R4B validation of every resource in the request, CPU µs:")
    for name, costs in sorted(per_type.items()):
        print(f"  {name:<20} {len(costs):3} × {sum(costs) / len(costs):6.0f} = {sum(costs):7.0f}")
    total = sum(sum(costs) for costs in per_type.values())
    print(f"  {'all':<20} {sum(map(len, per_type.values())):3}       {total:12.0f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="profiled requests")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    os.environ.setdefault("CDS_AUTH_MODE", "off")
    from cds_hooks.app import create_app
    from cds_hooks.store import upgrade_database

    body = REQUEST.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/feedback.sqlite3"
        upgrade_database(database)
        app = create_app({"ENV": "development", "DATABASE_URL": database})
        client = app.test_client()

        def call() -> None:
            response = client.post(HOOK_PATH, data=body, content_type="application/json")
            assert response.status_code == 200, response.get_data(as_text=True)[:500]

        for _ in range(20):
            call()
        started = time.thread_time()
        for _ in range(args.n):
            call()
        plain_us = (time.thread_time() - started) / args.n * 1e6

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.n):
            call()
        profiler.disable()

        stopwatch = Stopwatch()
        instrument(stopwatch)
        for _ in range(args.n):
            call()

    stats = pstats.Stats(profiler)
    print(f"{REQUEST.name}: {len(body)} bytes; {plain_us:.0f} CPU µs per request, unprofiled\n")
    print("stages, CPU µs per request (timed, not profiled; validation is inside them):")
    for label, seconds in sorted(stopwatch.seconds.items(), key=lambda kv: "fhir." in kv[0]):
        per_call = stopwatch.calls[label] / args.n
        print(f"  {label:<40} {seconds / args.n * 1e6:8.0f}   ({per_call:g} calls)")
    print()
    print_validation_costs(json.loads(body), repeat=20)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
