"""Outbound calls to the EHR's FHIR server for data the client did not prefetch.

The hook call must answer within a few seconds whatever the EHR's server does, and the
bearer token it lends us must reach that server and nothing else. Hence: an allowlist,
no automatic redirects, next links only on the same base, one deadline for the whole
fan-out (at which every connection still reading is cut, so no thread outlives the
call holding the token's socket), bounded response size, and failures returned as
values (the caller decides whether a missing kind is a gap or a 412). Connections to
each server are pooled across calls (``SESSIONS``). Logs carry kind, host, status, time and error
class only: never URLs (they hold patient ids), tokens or bodies.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import requests

from cds_hooks.config import Settings
from cds_hooks.discovery import PATIENT, prefetch_templates
from cds_hooks.model import DataKind, FhirVersion
from cds_hooks.network import Cutoff, Endpoint, SessionPool, address_refusal, is_loopback_host
from cds_hooks.prefetch import (
    NOT_AN_ANSWER,
    Entry,
    Irregularity,
    PrefetchState,
    PrefetchValue,
    read_bundle,
    whole_search,
)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 16 * 1024
SESSIONS = SessionPool(max_origins=16, connections=10)
"""Pooled connections per FHIR server, for the process: a deployment talks to one EHR or
a few; 10 idle connections cover two hook calls fetching at once (5 workers each)."""


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """One HTTP exchange with the FHIR server, as metrics see it (no URL, no body)."""

    kind: DataKind
    host: str
    status: int | None
    elapsed_ms: float
    error: str | None = None


FetchObserver = Callable[[FetchRecord], None]
OBSERVERS: list[FetchObserver] = []
"""Called with every FetchRecord (e.g. by a metrics module); must not raise."""


@dataclass(frozen=True, slots=True)
class FetchJob:
    """What to get for one kind: a read (Patient) or a search, maybe paging on."""

    kind: DataKind
    url: str
    follow_next: bool = False
    matched_before: int = 0
    """Search matches already read (a prefetched first page) that ``total`` counts."""
    reference: str | None = None
    """Set for a read that resolves a reference an order makes (``Medication/{id}``): the
    answer must be that resource, and is reported under the reference."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """``ok`` False: nothing usable came back. ``complete`` False: later pages are missing.

    ``error`` is a short, loggable reason for either. ``problems``: irregularities in
    what was read (entries that could not be read, fewer than ``total``...), so the
    entries are not the whole list even when every page was read.
    """

    kind: DataKind
    ok: bool
    entries: tuple[Entry, ...] = ()
    complete: bool = True
    error: str | None = None
    problems: tuple[Irregularity, ...] = ()


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a fan-out brought back: the searches (and the Patient read) by kind, and the
    reads of referenced resources by the reference as the order wrote it."""

    by_kind: Mapping[DataKind, FetchResult]
    by_reference: Mapping[str, FetchResult]

    def entries(self) -> list[Entry]:
        """Every resource that came back in a usable answer."""
        results = (*self.by_kind.values(), *self.by_reference.values())
        return [entry for result in results if result.ok for entry in result.entries]


NOTHING_FETCHED = Fetched({}, {})
FollowUp = Callable[[FetchJob, FetchResult], Iterable[FetchJob]]
"""Given a finished job and its result, the further jobs it calls for (run at once,
within the same deadline)."""
_LITERAL_REFERENCE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
"""``Type/id``, optionally versioned, at the end of a relative or absolute reference."""


class FetchError(Exception):
    """A failed exchange; ``reason`` is a short class name safe to log."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def check_fhir_server(url: str, settings: Settings) -> str | None:
    """Why we must not call this fhirServer, or None when it is fine.

    One place for every refusal so later checks (e.g. private addresses) slot in here.
    """
    base = Endpoint.parse(url)
    if base is None:
        return "not an absolute http(s) URL without credentials"
    https_required = not settings.development or (
        settings.auth_mode == "enforce" and not is_loopback_host(base.host)
    )
    if base.scheme != "https" and https_required:
        return "https required"
    for entry in settings.fhir_allowlist:
        allowed = Endpoint.parse(entry)
        if allowed is not None and allowed.contains(base):
            return address_refusal(base.host, named_by_allowlist=True)
    return "not allowlisted"


def search_url(base: str, kind: DataKind, patient_id: str, fhir_version: FhirVersion | None) -> str:
    """The discovery template for ``kind``, expanded for this patient, as an absolute URL."""
    template = prefetch_templates()[kind.value]
    if fhir_version is FhirVersion.DSTU2 and kind is DataKind.MEDICATIONS:
        template = template.replace("MedicationRequest", "MedicationOrder")
    relative = template.replace(PATIENT, quote(patient_id, safe=""))
    return base.rstrip("/") + "/" + relative


def reference_read(base: str, kind: DataKind, reference: str) -> FetchJob | None:
    """The read that resolves a literal reference on this server, or None when it cannot
    be read there (contained ``#id``, ``urn:``, not ``Type/id``); an absolute reference
    to another server is refused when run."""
    if reference.startswith(("#", "urn:")) or not _LITERAL_REFERENCE.search(reference):
        return None
    url = reference if "://" in reference else f"{base.rstrip('/')}/{reference}"
    return FetchJob(kind, url, reference=reference)


def fetch(
    base_url: str,
    access_token: str | None,
    jobs: Sequence[FetchJob],
    settings: Settings,
    patient_id: str | None = None,
    follow_up: FollowUp | None = None,
) -> Fetched:
    """Run ``jobs`` in parallel, and the jobs ``follow_up`` asks for as each one ends;
    whatever is unfinished at the deadline counts as failed, its connection cut.

    The caller has already passed ``base_url`` through ``check_fhir_server``. A page
    whose ``self`` link shows a search not for ``patient_id`` is not an answer.
    """
    if not jobs:
        return NOTHING_FETCHED
    deadline = time.monotonic() + settings.fhir_total_timeout
    fetcher = _Fetcher(base_url, access_token, settings, deadline, patient_id)
    executor = ThreadPoolExecutor(
        max_workers=settings.fhir_fetch_workers, thread_name_prefix="fhir-fetch"
    )
    pending: dict[Future[FetchResult], FetchJob] = {}
    by_kind: dict[DataKind, FetchResult] = {}
    by_reference: dict[str, FetchResult] = {}

    def report(job: FetchJob, result: FetchResult) -> None:
        if job.reference is None:
            by_kind[job.kind] = result
        else:
            by_reference[job.reference] = result

    try:
        for job in jobs:
            pending[executor.submit(fetcher.run, job)] = job
        while pending:
            remaining = max(0.0, deadline - time.monotonic())
            done, _ = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                job = pending.pop(future)
                report(job, future.result())
                for extra in follow_up(job, future.result()) if follow_up else ():
                    pending[executor.submit(fetcher.run, extra)] = extra
    finally:
        fetcher.cutoff.cut()
        executor.shutdown(wait=False, cancel_futures=True)
    for job in pending.values():
        log.warning(
            "FHIR fetch abandoned at deadline",
            extra={"data_kind": job.kind.value, "host": fetcher.host, "error": "deadline"},
        )
        report(job, FetchResult(job.kind, ok=False, error="deadline"))
    return Fetched(by_kind, by_reference)


class _Fetcher:
    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        settings: Settings,
        deadline: float,
        patient_id: str | None,
    ) -> None:
        base = Endpoint.parse(base_url)
        if base is None:
            raise ValueError("fhirServer must be checked with check_fhir_server first")
        self.base = base
        self.base_url = base_url.rstrip("/")
        self.host = base.host
        self.settings = settings
        self.deadline = deadline
        self.patient_id = patient_id
        self.session = SESSIONS.session(base)
        self.cutoff = Cutoff()
        self.headers = {"Accept": FHIR_JSON}
        if access_token:
            self.headers["Authorization"] = f"Bearer {access_token}"

    def run(self, job: FetchJob) -> FetchResult:
        """Never raises: a worker exception would otherwise surface in the hook call."""
        try:
            with self.cutoff.active():
                result = self._run(job)
        except Exception as exc:
            result = FetchResult(job.kind, ok=False, error=type(exc).__name__)
        if not result.ok or not result.complete or result.problems:
            problems = ",".join(result.problems) or None
            log.warning(
                "FHIR %s from %s %s: %s",
                job.kind.value,
                self.host,
                "failed" if not result.ok else "incomplete",
                result.error or problems,
                extra={
                    "data_kind": job.kind.value,
                    "host": self.host,
                    "error": result.error,
                    "problems": problems,
                },
            )
        return result

    def _run(self, job: FetchJob) -> FetchResult:
        if job.reference is not None:
            return self._resolve(job, job.reference)
        if job.kind is DataKind.PATIENT:
            try:
                body = self._get_json(job.url, job.kind)
            except FetchError as exc:
                return FetchResult(job.kind, ok=False, error=exc.reason)
            if body.get("resourceType") != "Patient":
                return FetchResult(job.kind, ok=False, error="unexpected_resource")
            return FetchResult(job.kind, ok=True, entries=(Entry(body),))
        return self._search(job)

    def _resolve(self, job: FetchJob, reference: str) -> FetchResult:
        """Read the resource a reference names; the answer must be that very resource."""
        if not self._within_base(job.url):
            return FetchResult(job.kind, ok=False, error="link_leaves_server")
        try:
            body = self._get_json(job.url, job.kind)
        except FetchError as exc:
            return FetchResult(job.kind, ok=False, error=exc.reason)
        target = _LITERAL_REFERENCE.search(reference)
        if target is None or (body.get("resourceType"), body.get("id")) != target.group(
            "type", "id"
        ):
            return FetchResult(job.kind, ok=False, error="unexpected_resource")
        return FetchResult(job.kind, ok=True, entries=(Entry(body, reference),))

    def _search(self, job: FetchJob) -> FetchResult:
        entries: list[Entry] = []
        problems: list[Irregularity] = []
        matched = job.matched_before
        url: str | None = job.url
        pages = 0
        error: str | None = None
        while url is not None and pages < self.settings.fhir_max_pages:
            url = urljoin(self.base_url + "/", url)
            if not self._within_base(url):
                error = "link_leaves_server"
                break
            try:
                body = self._get_json(url, job.kind)
                page = whole_search(_searchset(body, self.patient_id), matched)
            except FetchError as exc:
                if not pages:
                    return FetchResult(job.kind, ok=False, error=exc.reason)
                error = exc.reason
                break
            pages += 1
            matched += page.matched
            entries.extend(page.entries)
            problems.extend(page.problems)
            url = page.next_url if job.follow_next else None
        if url is not None and error is None:
            error = "page_limit"
        return FetchResult(
            job.kind,
            ok=True,
            entries=tuple(entries),
            complete=url is None,
            error=error,
            problems=tuple(dict.fromkeys(problems)),
        )

    def _within_base(self, url: str) -> bool:
        target = Endpoint.parse(url)
        return target is not None and self.base.contains(target)

    def _get_json(self, url: str, kind: DataKind) -> dict[str, Any]:
        for _ in range(MAX_REDIRECTS + 1):
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            try:
                status, location, body = self._exchange(url)
                if location is not None:
                    url = self._redirect_target(url, location, kind)
                    continue
                return _json_resource(body)
            except FetchError as exc:
                error = exc.reason
                status = status if exc.status is None else exc.status
                raise
            finally:
                self._record(kind, status, _ms(started), error)
        raise FetchError("too_many_redirects")

    def _exchange(self, url: str) -> tuple[int, str | None, bytes]:
        """One GET: (status, redirect location or None, body)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("deadline")
        try:
            response = self.session.get(
                url,
                headers=self.headers,
                timeout=(min(self.settings.fhir_connect_timeout, remaining), remaining),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout as exc:
            raise FetchError("timeout") from exc
        except requests.RequestException as exc:
            raise FetchError("connection") from exc
        with response:
            status = response.status_code
            if status in REDIRECT_STATUSES:
                return status, response.headers.get("Location", ""), b""
            if status != 200:
                raise FetchError("http_status", status)
            return status, None, self._read(response)

    def _redirect_target(self, url: str, location: str, kind: DataKind) -> str:
        """Only redirects to the same scheme, host and port; the token goes nowhere else."""
        target = urljoin(url, location) if location else None
        parsed = Endpoint.parse(target) if target else None
        if target is None or parsed is None or not self.base.same_origin(parsed):
            log.warning(
                "FHIR redirect to another origin refused",
                extra={"data_kind": kind.value, "host": self.host},
            )
            raise FetchError("redirect_refused")
        return target

    def _read(self, response: requests.Response) -> bytes:
        """Stream the body, stopping at the size cap or the deadline."""
        limit = self.settings.fhir_max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError("too_large", response.status_code)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise FetchError("too_large", response.status_code)
                if time.monotonic() > self.deadline:
                    raise FetchError("deadline", response.status_code)
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise FetchError("read_failed", response.status_code) from exc
        return b"".join(chunks)

    def _record(
        self, kind: DataKind, status: int | None, elapsed_ms: float, error: str | None
    ) -> None:
        record = FetchRecord(kind, self.host, status, elapsed_ms, error)
        level = logging.INFO if error is None and status == 200 else logging.WARNING
        log.log(
            level,
            "FHIR %s %s status=%s %.0fms%s",
            kind.value,
            self.host,
            status,
            elapsed_ms,
            f" error={error}" if error else "",
            extra={
                "data_kind": kind.value,
                "host": self.host,
                "status": status,
                "elapsed_ms": round(elapsed_ms, 1),
                "error": error,
            },
        )
        for observer in OBSERVERS:
            try:
                observer(record)
            except Exception:
                log.exception("FHIR fetch observer failed")


def _searchset(body: Mapping[str, Any], patient_id: str | None) -> PrefetchValue:
    """One page; a page that is not an answer for this patient, or an error, fails."""
    if body.get("resourceType") != "Bundle":
        raise FetchError("unexpected_resource")
    value = read_bundle(body, patient_id)
    if value.state is not PrefetchState.RESOURCES:
        refusal = NOT_AN_ANSWER.intersection(value.problems)
        raise FetchError(next(iter(refusal)).value if refusal else "operation_outcome")
    return value


def _json_resource(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError("not_json") from exc
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise FetchError("not_fhir")
    if value["resourceType"] == "OperationOutcome":
        raise FetchError("operation_outcome")
    return value


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
