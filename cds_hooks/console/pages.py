"""The console's pages: Overrides (rates, reasons, comments), Rules, Replay a case, Export."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Response, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from markdown_it import MarkdownIt
from markupsafe import Markup
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse
from wtforms import Form, SelectChoice, SelectField, TextAreaField
from wtforms.fields import DateField
from wtforms.validators import Optional

from cds_hooks.config import Settings
from cds_hooks.console import bp, charts, console_user
from cds_hooks.console.auth import LogoutForm
from cds_hooks.console.rates import GROUPINGS, Rate, totals, weekly_rates
from cds_hooks.discovery import SERVICES
from cds_hooks.errors import CdsError
from cds_hooks.knowledge import Knowledge
from cds_hooks.pipeline import evaluate_hook
from cds_hooks.reports import (
    EvaluationReview,
    evaluation_review,
    feedback_csv,
    reason_display,
    topic_display,
)
from cds_hooks.store import FeedbackFilter, get_store
from cds_hooks.store.console import (
    comments_page,
    daily_counts,
    knowledge_versions,
    log_comment_view,
)

log = logging.getLogger(__name__)

COMMENTS_PER_PAGE = 20
# CommonMark without raw HTML, and links only to safe schemes (no javascript:): card text
# is rendered as an EHR would, and a pasted request can put anything in it.
_MARKDOWN = MarkdownIt("js-default")


class FilterForm(Form):
    """The filters of the Overrides and Export pages: a GET form that changes nothing, so
    it carries no CSRF token (its values end up in the URL, where a token must not be)."""

    service = SelectField(
        "Service",
        choices=[SelectChoice("", "all"), *(SelectChoice(s.id) for s in SERVICES)],
        default="",
    )
    version = SelectField("Knowledge version", choices=[SelectChoice("", "all")], default="")
    since = DateField("From", validators=[Optional()])
    until = DateField("To (inclusive)", validators=[Optional()])
    by = SelectField("Rates per", choices=[SelectChoice(g) for g in GROUPINGS], default="topic")


class ReplayForm(FlaskForm):
    request_json = TextAreaField("Hook request or captured exchange (JSON)")
    upload = FileField("…or a file")
    today = DateField("Evaluate as of", validators=[Optional()])


def _filters() -> tuple[FilterForm, FeedbackFilter]:
    form = FilterForm(MultiDict(request.args))
    versions = knowledge_versions(get_store())
    form.version.choices = [SelectChoice("", "all"), *(SelectChoice(v) for v in versions)]
    if not form.validate():
        return form, FeedbackFilter()
    since = form.since.data
    until = form.until.data
    return form, FeedbackFilter(
        since=datetime.combine(since, time(), UTC) if since else None,
        until=datetime.combine(until + timedelta(days=1), time(), UTC) if until else None,
        service_id=form.service.data or None,
        knowledge_version=form.version.data or None,
    )


def _knowledge() -> Knowledge:
    knowledge: Knowledge = current_app.extensions["baclofen_knowledge"]
    return knowledge


def _page(template: str, **context: Any) -> str:
    return render_template(
        f"console/{template}", user=console_user(), logout_form=LogoutForm(), **context
    )


@bp.get("/")
def index() -> BaseResponse:
    return redirect(url_for("console.overrides"))


def _weekly() -> tuple[FilterForm, FeedbackFilter, str, dict[str, dict[date, Rate]]]:
    """The filters asked for, the grouping (topic or rule) and the weekly counts per group."""
    form, where = _filters()
    grouping = form.by.data if form.by.data in GROUPINGS else "topic"
    return (
        form,
        where,
        grouping,
        weekly_rates(daily_counts(get_store(), where), grouping, _knowledge()),
    )


@bp.get("/overrides")
def overrides() -> str:
    form, where, grouping, weekly = _weekly()
    return _page(
        "overrides.html",
        form=form,
        query=request.query_string.decode("ascii", "replace"),
        grouping=grouping,
        totals=totals(weekly),
        reasons=_reasons(where),
    )


def _reasons(where: FeedbackFilter) -> list[tuple[str, int]]:
    counted: Counter[str] = Counter()
    for count in get_store().feedback_summary(where):
        if count.outcome == "overridden":
            counted[reason_display(count) or "no reason coded"] += count.count
    return counted.most_common()


def _svg(content: bytes) -> Response:
    return Response(content, mimetype="image/svg+xml")


@bp.get("/charts/override-rates.svg")
def override_rates_chart() -> Response:
    return _svg(charts.override_rate_chart(_weekly()[3]))


@bp.get("/charts/reasons.svg")
def reasons_chart() -> Response:
    _, where = _filters()
    return _svg(charts.reasons_chart(_reasons(where)))


@bp.get("/comments")
def comments() -> str:
    form, where = _filters()
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    shown, total = comments_page(get_store(), where, page, COMMENTS_PER_PAGE)
    user = console_user() or ""
    log_comment_view(get_store(), user, page, len(shown))
    log.info(
        "console comments viewed",
        extra={"console_user": user, "page": page, "comments_shown": len(shown)},
    )
    pages = max((total + COMMENTS_PER_PAGE - 1) // COMMENTS_PER_PAGE, 1)
    args = {k: v for k, v in request.args.items() if k != "page"}
    return _page(
        "comments.html",
        form=form,
        comments=shown,
        page=page,
        pages=pages,
        total=total,
        args=args,
        topic_display=topic_display,
    )


@bp.get("/rules")
def rules() -> str:
    knowledge = _knowledge()
    weekly = weekly_rates(daily_counts(get_store(), FeedbackFilter()), "rule", knowledge)
    return _page(
        "rules.html",
        knowledge=knowledge,
        rules=list(knowledge.rules.values()),
        rates=totals(weekly),
        empty=Rate(),
    )


@bp.get("/export.csv")
def export() -> Response:
    form, where = _filters()
    if form.errors:
        # A spreadsheet of everything where a filtered one was asked for would mislead.
        fields = ", ".join(str(form[name].label.text) for name in form.errors)
        return Response(f"Invalid filter: {fields}.\n", status=400, mimetype="text/plain")
    body = feedback_csv(get_store().feedback_summary(where))
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return Response(
        body,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="baclofen-cds-overrides-{stamp}.csv"'
        },
    )


@bp.route("/replay", methods=["GET", "POST"])
def replay() -> Any:
    form = ReplayForm()
    review: EvaluationReview | None = None
    error: str | None = None
    if form.validate_on_submit():
        review, error = _replay(form)
    elif form.errors:
        error = "; ".join(
            f"{name}: {' '.join(map(str, errs))}" for name, errs in form.errors.items()
        )
    status = 400 if error else 200
    return _page("replay.html", form=form, review=review, error=error, markdown=_markdown), status


def _replay(form: ReplayForm) -> tuple[EvaluationReview | None, str | None]:
    """Evaluate the pasted or uploaded request as the service would, from its prefetch only:
    nothing is stored, and no FHIR server is called (a pasted request may name any server
    and lend a token that is not the console user's)."""
    upload = form.upload.data
    text = upload.read().decode("utf-8", "replace") if upload else (form.request_json.data or "")
    if not text.strip():
        return None, "Paste a hook request or choose a file."
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None, "That is not valid JSON."
    if isinstance(body, dict) and "body" in body and "path" in body:
        body = body["body"]  # a captured HTTP exchange: replay its body
    if not isinstance(body, dict):
        return None, "A hook request is a JSON object."
    service = next((s for s in SERVICES if s.hook == body.get("hook")), None)
    if service is None:
        return None, "The request's hook is none of " + ", ".join(s.hook for s in SERVICES) + "."
    body = {k: v for k, v in body.items() if k not in ("fhirServer", "fhirAuthorization")}
    settings: Settings = current_app.extensions["baclofen_settings"]
    try:
        evaluation = evaluate_hook(
            service, body, settings, _knowledge(), form.today.data or date.today()
        )
    except CdsError as refused:
        return None, f"The service would refuse this request: {refused.message}"
    return evaluation_review(evaluation), None


def _markdown(text: Any) -> Markup:
    return Markup(_MARKDOWN.render(text if isinstance(text, str) else ""))
