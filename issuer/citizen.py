"""Citizen pages (``/c/{token}``): the printed QR's status page and, with the access code, the
holder's own report with objections, repair, human review and a star-level simulator.

Plain HTML forms (no JavaScript), Chinese by default, English with ``?lang=en`` or the
browser's ``Accept-Language`` (:mod:`issuer.citizen_i18n`). ``docs/citizen.md`` explains the
choices; the invariants:

- **No enumeration oracle.** Every token (well-formed or not) is hashed and looked up once;
  a token that matches no card, or a card that is revoked or not (yet) issued, gets the same
  page, byte for byte ("this card cannot be shown"). Only a live card (active or suspended)
  shows anything: active and unexpired → valid with its stars (both are printed on the card);
  suspended or expired → "not valid at the moment", no stars.
- **Rate limit** per client IP on every ``/c/`` request (in-memory token bucket, 429).
- **Access code** in constant time; ``max_wrong_codes`` wrong codes lock the card's code
  for ``lock_minutes`` (:mod:`issuer.citizen_security`). Success sets a signed session cookie
  (HttpOnly, SameSite=Strict, Secure over https) for ``session_minutes``.
- **CSRF** token on every POST form; no state-changing GET.
- Every report view is written to the query log (actor ``citizen``, purpose ``own report``);
  objections, repair and review requests go through the same desks as staff requests
  (``filed_by="subject"``), so they are audited, re-graded and announced the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader
from sqlalchemy import select

from issuer.citizen_i18n import pick_language, translator
from issuer.citizen_report import ACTOR, fetch_checks, load_report
from issuer.citizen_security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CitizenLimits,
    CitizenRefused,
    SessionSigner,
    check_access_code,
    check_csrf,
    new_csrf_token,
    token_hash,
)
from issuer.db import cards, records, stored_utc
from issuer.events import RightsConflict, RightsError, RightsNotFound
from issuer.grading import GradingError
from issuer.lifecycle import LIVE_STATES
from issuer.objections import ObjectionDesk
from issuer.repair import RepairApplication, RepairConditionsNotMet, RepairDesk
from issuer.review import request_review
from issuer.wiring import IssuerContext
from verifier.api.auth import TokenBucket

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
FormText = Annotated[str, Form(max_length=4000)]


def citizen_router(
    ctx: IssuerContext,
    now: Callable[[], dt.datetime],
    *,
    limits: CitizenLimits | None = None,
) -> APIRouter:
    """The ``/c/`` routes for ``ctx``; ``now`` is the app's clock (also the rate limit's)."""
    limits = limits or CitizenLimits()
    router = APIRouter(prefix="/c", include_in_schema=False)
    env = Environment(loader=PackageLoader("issuer", "templates"), autoescape=True)
    bucket = TokenBucket(limits.rate_per_s, limits.burst)
    sessions = SessionSigner(ctx.settings.pii_key)
    objection_desk = ObjectionDesk(ctx.policies)
    repair_desk = RepairDesk(ctx.policies)

    def page(
        request: Request, name: str, status: int = 200, csrf: str | None = None, **values: Any
    ) -> HTMLResponse:
        lang = pick_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )
        html = env.get_template(f"citizen/{name}").render(
            t=translator(lang),
            lang=lang,
            other_lang="en" if lang == "zh" else "zh",
            lang_q=f"?lang={lang}" if "lang" in request.query_params else "",
            csrf=csrf,
            **values,
        )
        headers = {**_HEADERS, "Content-Language": "zh-CN" if lang == "zh" else "en"}
        response = HTMLResponse(html, status_code=status, headers=headers)
        if csrf is not None and request.cookies.get(CSRF_COOKIE) != csrf:
            _cookie(request, response, CSRF_COOKIE, csrf, None)
        return response

    def message(request: Request, refusal: CitizenRefused, back: str | None = None) -> Response:
        lang = pick_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )
        notice = translator(lang)(refusal.key, **refusal.values)
        return page(request, "message.html", refusal.status, notice=notice, back=back)

    def unavailable(request: Request) -> HTMLResponse:
        return page(request, "unavailable.html")

    def limited(request: Request) -> Response | None:
        client = request.client.host if request.client is not None else "unknown"
        wait = bucket.take(client, now().timestamp())
        if wait <= 0:
            return None
        seconds = max(1, math.ceil(wait))
        response = message(request, CitizenRefused("rate_limited", seconds=seconds))
        response.status_code = 429
        response.headers["Retry-After"] = str(seconds)
        return response

    def live_card(token: str) -> Any:
        """The live card of ``token`` or None; the same hash and lookup for every token."""
        with ctx.engine.connect() as conn:
            card = conn.execute(
                select(
                    cards.c.serial,
                    cards.c.subject_id,
                    cards.c.state,
                    cards.c.stars,
                    cards.c.expires_at,
                    cards.c.access_code_hash,
                ).where(cards.c.qr_token_hash == token_hash(token))
            ).first()
        return card if card is not None and card.state in LIVE_STATES else None

    def card_valid(card: Any, at: dt.datetime) -> bool:
        expires = card.expires_at
        return bool(card.state == "active" and (expires is None or stored_utc(expires) > at))

    def base(token: str) -> str:
        return f"/c/{quote(token, safe='')}"

    def csrf_of(request: Request) -> str:
        return request.cookies.get(CSRF_COOKIE) or new_csrf_token()

    def status_page(
        request: Request, token: str, card: Any, notice: str | None = None, status: int = 200
    ) -> HTMLResponse:
        return page(
            request,
            "status.html",
            status,
            csrf=csrf_of(request),
            card_valid=card_valid(card, now()),
            stars=card.stars,
            base=base(token),
            notice=notice,
        )

    def report_page(
        request: Request,
        token: str,
        card: Any,
        *,
        notice: str | None = None,
        refused: bool = False,
        unmet: tuple[str, ...] = (),
        status: int = 200,
    ) -> HTMLResponse:
        at = now()
        pending = False
        with ctx.engine.begin() as conn:
            try:
                report = load_report(conn, ctx, card.subject_id, at)
            except GradingError:
                report, pending = None, True
        checks = fetch_checks(ctx.settings.verifier_url, ctx.settings.verifier_token, card.serial)
        return page(
            request,
            "report.html",
            status,
            csrf=csrf_of(request),
            card_valid=card_valid(card, at),
            report=report,
            pending=pending,
            checks=checks,
            base=base(token),
            notice=notice,
            refused=refused,
            unmet=unmet,
        )

    def in_session(request: Request, token: str, csrf: str | None) -> Any:
        """The live card whose session this request carries (and, for a POST, whose CSRF
        token it repeats); raises :class:`CitizenRefused` otherwise (None: no such card)."""
        if csrf is not None:
            check_csrf(request.cookies.get(CSRF_COOKIE), csrf)
        card = live_card(token)
        if card is not None:
            sessions.check(request.cookies.get(SESSION_COOKIE), token_hash(token), now())
        return card

    def t_for(request: Request) -> Callable[..., str]:
        lang = pick_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )
        return translator(lang)

    @router.get("/{token}", response_class=HTMLResponse)
    def status(request: Request, token: str) -> Response:
        if (refused := limited(request)) is not None:
            return refused
        card = live_card(token)
        return unavailable(request) if card is None else status_page(request, token, card)

    @router.post("/{token}/code", response_class=HTMLResponse)
    def code(request: Request, token: str, code: FormText = "", csrf: FormText = "") -> Response:
        if (refused := limited(request)) is not None:
            return refused
        try:
            check_csrf(request.cookies.get(CSRF_COOKIE), csrf)
        except CitizenRefused as exc:
            return message(request, exc, back=base(token))
        card = live_card(token)
        at = now()
        with ctx.engine.connect() as conn:
            try:
                check_access_code(conn, card, code.strip(), at, limits)
            except CitizenRefused as exc:
                conn.commit()
                if card is None:
                    return unavailable(request)
                notice = t_for(request)(exc.key, **exc.values)
                return status_page(request, token, card, notice, exc.status)
            conn.commit()
        lang = request.query_params.get("lang")
        target = base(token) + "/report" + (f"?lang={quote(lang)}" if lang else "")
        response = RedirectResponse(target, status_code=303, headers=_HEADERS)
        expires = at + dt.timedelta(minutes=limits.session_minutes)
        value = sessions.issue(token_hash(token), expires)
        _cookie(request, response, SESSION_COOKIE, value, limits.session_minutes * 60)
        return response

    @router.get("/{token}/report", response_class=HTMLResponse)
    def report(request: Request, token: str) -> Response:
        if (refused := limited(request)) is not None:
            return refused
        try:
            card = in_session(request, token, None)
        except CitizenRefused as exc:
            card = live_card(token)
            if card is None:
                return unavailable(request)
            return status_page(request, token, card, t_for(request)(exc.key), exc.status)
        if card is None:
            return unavailable(request)
        return report_page(request, token, card)

    def act(request: Request, token: str, csrf: str, action: Callable[[Any], str]) -> Response:
        """Runs ``action(card)`` (returns the notice) for a POST in a live session."""
        if (refused := limited(request)) is not None:
            return refused
        try:
            card = in_session(request, token, csrf)
        except CitizenRefused as exc:
            return message(request, exc, back=base(token))
        if card is None:
            return unavailable(request)
        try:
            notice = action(card)
        except RepairConditionsNotMet as exc:
            text = t_for(request)("repair_refused")
            return report_page(
                request, token, card, notice=text, refused=True, unmet=exc.reasons, status=422
            )
        except RightsError as exc:
            code = 404 if isinstance(exc, RightsNotFound) else 409
            code = code if isinstance(exc, RightsNotFound | RightsConflict) else 422
            text = t_for(request)("refused", reason=str(exc))
            return report_page(request, token, card, notice=text, refused=True, status=code)
        return report_page(request, token, card, notice=notice)

    def record_id_of(value: str, required: bool) -> int | None:
        if not value.strip() and not required:
            return None
        try:
            return int(value)
        except ValueError:
            raise RightsNotFound(f"no record {value!r}: choose one from the list") from None

    @router.post("/{token}/objection", response_class=HTMLResponse)
    def objection(
        request: Request,
        token: str,
        csrf: FormText = "",
        record_id: FormText = "",
        grounds: FormText = "",
    ) -> Response:
        def file(card: Any) -> str:
            with ctx.engine.begin() as conn:
                filed = objection_desk.file(
                    conn,
                    card.subject_id,
                    record_id=record_id_of(record_id, required=False),
                    grounds=grounds,
                    filed_by="subject",
                    actor=ACTOR,
                    now=now(),
                )
            return t_for(request)("objection_filed", id=filed)

        return act(request, token, csrf, file)

    @router.post("/{token}/repair", response_class=HTMLResponse)
    def repair(
        request: Request,
        token: str,
        csrf: FormText = "",
        record_id: FormText = "",
        obligations_performed: FormText = "",
        evidence: FormText = "",
        commitment: FormText = "",
    ) -> Response:
        def apply(card: Any) -> str:
            number = record_id_of(record_id, required=True)
            application = RepairApplication(
                int(number or 0), obligations_performed == "yes", evidence, commitment
            )
            with ctx.engine.begin() as conn:
                owner = conn.execute(
                    select(records.c.subject_id).where(records.c.id == application.record_id)
                ).scalar_one_or_none()
                if owner != card.subject_id:
                    raise RightsNotFound(f"you have no record {application.record_id}")
                filed = repair_desk.request(conn, application, ACTOR, now())
            return t_for(request)("repair_filed", id=filed)

        return act(request, token, csrf, apply)

    @router.post("/{token}/review", response_class=HTMLResponse)
    def review(
        request: Request, token: str, csrf: FormText = "", reason: FormText = ""
    ) -> Response:
        def ask(card: Any) -> str:
            with ctx.engine.begin() as conn:
                filed = request_review(conn, card.subject_id, reason, ACTOR, now())
            return t_for(request)("review_filed", id=filed)

        return act(request, token, csrf, ask)

    @router.post("/{token}/logout")
    def logout(request: Request, token: str, csrf: FormText = "") -> Response:
        try:
            check_csrf(request.cookies.get(CSRF_COOKIE), csrf)
        except CitizenRefused as exc:
            return message(request, exc, back=base(token))
        response = RedirectResponse(base(token), status_code=303, headers=_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/c/")
        return response

    return router


def _cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/c/",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )
