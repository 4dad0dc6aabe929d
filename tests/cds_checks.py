"""Assertions about CDS Hooks wire format shared by several test modules."""

from __future__ import annotations

from typing import Any


def empty_optional_values(value: Any, path: str = "$") -> list[str]:
    """Paths of ``null``, ``""``, ``[]`` or ``{}`` anywhere (the spec forbids them).

    ``$.cards`` itself is exempt: ``{"cards": []}`` is the one allowed empty.
    """
    found: list[str] = []
    if value is None or value == "" or value == [] or value == {}:
        if path != "$.cards":
            found.append(path)
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(empty_optional_values(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(empty_optional_values(item, f"{path}[{index}]"))
    return found


def assert_operation_outcome(body: Any, *, mentions: str | None = None) -> None:
    assert isinstance(body, dict), body
    assert body.get("resourceType") == "OperationOutcome", body
    issues = body["issue"]
    assert issues and issues[0]["severity"] == "error"
    assert issues[0]["code"]
    diagnostics = issues[0].get("diagnostics", "")
    assert diagnostics, "an OperationOutcome must say what was wrong"
    if mentions is not None:
        assert mentions.lower() in diagnostics.lower(), diagnostics
