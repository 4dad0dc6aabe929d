"""How much the service remembers of pure lookups, so memory stays bounded whatever it is sent.

Drug and lab concepts, quantities and dose instructions recur across patients, so their
validation and classification are memoised on their exact JSON. A memo is bounded in
entries (least recently used dropped first) and in the size of what one entry can hold:
JSON longer than ``MAX_KEY_BYTES`` is not remembered at all. Real codes and doses are a
few hundred bytes; a unique 500 kB drug name, sent over and over, would otherwise grow a
worker by megabytes a request until it is killed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from cds_hooks.model import Concept, MedicationProduct

MEMO_SIZE = 4096
"""Entries remembered per lookup."""
MAX_KEY_BYTES = 2048
"""Longest JSON remembered; longer input is worked out afresh each time."""

_KEY_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""Anything but plain JSON types makes ``orjson.dumps`` raise, so such input is not memoised."""
_R = TypeVar("_R")


def memo_key(value: Any) -> bytes | None:
    """The exact JSON as bytes, to memoise a pure function of a code or datatype on; None
    when that would not tell inputs apart or is too long to remember.

    ``null`` is excluded because orjson writes NaN and infinities as ``null`` too.
    """
    try:
        key = orjson.dumps(value, option=_KEY_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return None if len(key) > MAX_KEY_BYTES or b"null" in key else key


def concept_memo(function: Callable[..., _R]) -> Callable[..., _R]:
    """``function`` of a concept (and an optional product), memoised.

    The same few hundred drug and condition concepts recur across patients, so answers are
    remembered: up to ``MEMO_SIZE`` of them (all forgotten at once when full, which a
    deployment's few hundred drugs never reach), and none whose codes and names run over
    ``MAX_KEY_BYTES``, as ``memo_key`` refuses long JSON. A remembered answer costs one
    dictionary lookup; size is weighed only for a new one.
    """
    remembered: dict[tuple[Any, ...], _R] = {}

    def lookup(*args: Any) -> _R:
        try:
            return remembered[args]
        except KeyError:
            pass
        answer = function(*args)
        if sum(_size(arg) for arg in args) <= MAX_KEY_BYTES:
            if len(remembered) >= MEMO_SIZE:
                remembered.clear()
            remembered[args] = answer
        return answer

    return lookup


def _size(value: Any) -> int:
    if isinstance(value, Concept):
        size = len(value.text) if value.text else 0
        for coding in value.codings:
            size += len(coding.system or "") + len(coding.code or "") + len(coding.display or "")
        return size
    if isinstance(value, MedicationProduct):
        return _size(value.code) + _size(value.form)
    return 0
