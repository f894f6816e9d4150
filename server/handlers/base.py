"""BaseHandler and its two flavours: ``ApiHandler`` (JSON) and ``PageHandler`` (HTML).

Every request gets:
- an ``X-Request-Id`` (the client's, when it is a sane token, or a fresh one), on every log
  line the request writes too, with the caller's user id once known (``server.logs``);
- one database session and transaction, committed before a successful response is sent and
  rolled back on any error, so a client is never told "success" for a change that was lost;
- its principal resolved asynchronously in ``prepare``, then the route's requirement enforced
  (``server.permissions``: declared once in the route table, never repeated in a handler);
- one error shape: the JSON envelope ``{"msg", "code", "errors"}`` or the HTML error page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from tornado.locale import Locale
from tornado.web import Finish, RequestHandler

from repositories.audit import AuditRepository
from repositories.menus import MenuNode
from schemas.common import ErrorEnvelope, ErrorItem
from schemas.text import Joined, Text
from server.errors import ApiError, FieldProblem, Message, classify
from server.i18n import DEFAULT_LANGUAGE, LANGUAGES, locale_for, negotiate, script_texts, supported
from server.i18n.validation import validation_reason
from server.invalidation import Event
from server.logins import Login, TokenExpired
from server.logs import bind_request, request_id_from
from server.permissions import LOGIN, PUBLIC, Requirement
from server.principal import Principal
from server.security.tokens import bearer_token
from server.services import Services

ModelT = TypeVar("ModelT", bound=BaseModel)

log = logging.getLogger("mservices.request")

MAX_JSON_BODY = 64 * 1024
MAX_JSON_DEPTH = 64
"""How deeply arrays and objects may nest in a request body: ``json.loads`` recurses once per
level, so a body of 50,000 ``[`` would end in a RecursionError; no request model needs more."""
JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
"""A JSON string (its brackets are text, not nesting; an unterminated one runs to the end, so a
scan stays linear) or one bracket."""
SESSION_COOKIE = "mservices_session"
FLASH_COOKIE = "mservices_flash"
CORS_ALLOW_HEADERS = "Content-Type, Authorization, X-Requested-With"
CORS_MAX_AGE = 600
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
ERROR_HEADINGS = {
    400: Text("The request is not valid"),
    401: Text("Please log in first"),
    403: Text("You do not have permission to open this page"),
    404: Text("This page cannot be found"),
    405: Text("This kind of request is not supported"),
    409: Text("This conflicts with existing data"),
    413: Text("The request is too large"),
    422: Text("The input is not valid"),
    429: Text("Too many requests; please try again later"),
    500: Text("Something went wrong on the server"),
    503: Text("The service is unavailable; please try again later"),
}
"""The sentence an error page leads with, by status (the detail below it comes from the error)."""
ERROR_HEADING_OTHER = Text("Something went wrong")
LANGUAGE_COOKIE = "mservices_lang"
"""A visitor's language choice (a logged-in user's is stored on the account)."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class QuerySchema(BaseModel):
    """Base of query-string models (``BaseHandler.query``): unknown parameters are ignored
    (caches add their own)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class BaseHandler(RequestHandler):
    """Shared request plumbing: request id, session and transaction, principal, errors."""

    api: bool = True
    """True: errors are JSON envelopes. PageHandler sets False for HTML error pages."""

    services: Services
    need: Requirement
    """What the route needs (``route(..., need=...)`` in the route table): ``PUBLIC``,
    ``LOGIN`` or a permission code, per method. A caller without it gets 403; an anonymous one,
    a login prompt."""
    current_user: Principal | None
    login: Login | None = None
    request_id: str
    _session: AsyncSession | None = None
    _finishing: asyncio.Future[None] | None = None
    _after_commit: list[Callable[[], Awaitable[None]]]
    _refusal: tuple[str, str] | None = None

    def initialize(self, services: Services, need: Requirement) -> None:
        """Receive the process's services and the route's requirement (route kwargs)."""
        self.services = services
        self.need = need
        self._after_commit = []

    def set_default_headers(self) -> None:
        """Stamp every response, error pages included, with the request id."""
        if not hasattr(self, "request_id"):
            self.request_id = request_id_from(self.request.headers.get("X-Request-Id"))
        self.set_header("X-Request-Id", self.request_id)
        self.set_header("X-Content-Type-Options", "nosniff")

    async def prepare(self) -> None:
        """Resolve the caller (``get_current_user`` cannot await), then enforce the route's
        requirement for this method."""
        self.bind_log_context()
        self.current_user = await self.authenticate()
        self.bind_log_context()
        # A CORS preflight never carries credentials; it only asks what is allowed.
        if self.request.method != "OPTIONS":
            await self.authorize(self.need.for_method(self.request.method or "GET"))

    def bind_log_context(self) -> None:
        """Tag the log lines of this request's task (and the tasks it starts) with its id and,
        once authenticated, the caller's user id.

        Not in ``set_default_headers``: that first runs in ``__init__``, still in the task of
        the connection, whose later requests (a static file, a WebSocket) would inherit the id.
        ``prepare`` runs in the request's own task; so do ``log_exception`` and ``write_error``,
        which bind for a request refused before ``prepare`` (405, XSRF).
        """
        bind_request(self.request_id, self.login.principal.user_id if self.login else None)

    async def authenticate(self) -> Principal | None:
        """The principal of the browser session cookie, or None (an expired one is cleared)."""
        token = self.session_token()
        if token is None:
            return None
        try:
            login = await self.services.logins.resolve(token)
        except TokenExpired:
            login = None
        if login is None:
            self.clear_cookie(SESSION_COOKIE, path="/")
            return None
        self.login = login
        return login.principal

    def session_token(self) -> str | None:
        """The token inside the signed session cookie, or None."""
        max_age = self.services.settings.token_absolute_days + 1
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=max_age)
        if raw is None:
            return None
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None

    def start_session(self, token: str) -> None:
        """Set the signed, HttpOnly, SameSite=Lax session cookie that refers to ``token``."""
        self.set_signed_cookie(
            SESSION_COOKIE,
            token,
            expires_days=self.services.settings.token_absolute_days,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self.request.protocol == "https",
        )

    async def authorize(self, need: str) -> None:
        """Let the request through only when the caller meets ``need``."""
        if need == PUBLIC:
            return
        if self.current_user is None:
            self.login_required()
        if need != LOGIN and not await self.permits(need):
            raise ApiError(
                403,
                "permission_required",
                Text("your roles do not grant the permission {permission}", permission=need),
            )

    async def permits(self, need: str) -> bool:
        """True when the caller meets ``need`` (to show or hide what a page offers)."""
        return await self.services.menus.permits(self.current_user, need)

    def login_required(self) -> NoReturn:
        """Refuse an anonymous caller (401; pages redirect to the login form)."""
        raise ApiError(
            401,
            "not_authenticated",
            Text("log in first and send `Authorization: Bearer <token>`"),
            headers={"WWW-Authenticate": "Bearer"},
        )

    def current_login(self) -> Login:
        """The caller's login. Routes that call it declare ``LOGIN`` or a permission, so
        ``prepare`` has already refused visitors; the refusal here is only a backstop."""
        if self.login is None:
            self.login_required()
        return self.login

    # -- language ------------------------------------------------------------------------------

    def get_user_locale(self) -> Locale:
        """The reader's language: the account's choice, else this browser's choice (the header
        switch), else ``Accept-Language``, else Chinese. Tornado asks once, on first use of
        ``self.locale``, which comes after ``prepare`` resolved the caller."""
        return locale_for(self.language())

    def language(self) -> str:
        """The code of the reader's language (one of ``LANGUAGES``)."""
        principal = getattr(self, "current_user", None)
        chosen = principal.language if isinstance(principal, Principal) else None
        return (
            supported(chosen)
            or supported(self.get_cookie(LANGUAGE_COOKIE))
            or negotiate(self.request.headers.get("Accept-Language"))
            or DEFAULT_LANGUAGE
        )

    def text(self, message: Message) -> str:
        """``message`` in the reader's language (a plain ``str`` is data, returned as it is)."""
        if isinstance(message, str):
            return message
        return message.translate(self.locale.translate)

    def get_template_namespace(self) -> dict[str, Any]:
        """Templates get ``_`` (Tornado's), ``text`` for a ``Text``, the language for
        ``<html lang>`` and the switch, and the scripts' messages."""
        namespace = super().get_template_namespace()
        language = self.locale.code
        namespace.update(
            text=self.text,
            language=language,
            html_lang=language.replace("_", "-"),
            languages=LANGUAGES,
            script_texts=lambda: script_texts(language),
            menu_title=self.menu_title,
        )
        return namespace

    def menu_title(self, menu: MenuNode) -> str:
        """A built-in menu's title in the reader's language; an admin's menu as typed."""
        return self.locale.translate(menu.title_key) if menu.title_key else menu.title

    @property
    def db(self) -> AsyncSession:
        """This request's session; it connects on first use and is settled in ``finish``."""
        if self._session is None:
            self._session = self.services.sessions()
        return self._session

    # -- request bodies and responses -------------------------------------------------------

    def parse(self, schema: type[ModelT]) -> ModelT:
        """Validate the JSON body against ``schema`` (415 wrong type, 413 too big, 400 malformed,
        422 invalid)."""
        return self.validate(schema, self.parse_json())

    def parse_json(self) -> Any:
        """The JSON body as plain data (415 wrong type, 413 too big, 400 malformed)."""
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", Text("the body must be application/json"))
        body = self.request.body
        if len(body) > MAX_JSON_BODY:
            raise ApiError(
                413,
                "payload_too_large",
                Text("the body exceeds {limit} bytes", limit=MAX_JSON_BODY),
            )
        try:
            # Decoded here, not by json.loads (which would also guess UTF-16 or UTF-32), so the
            # depth check reads exactly the characters the parser will read (RFC 8259: UTF-8).
            text = body.decode("utf-8") if body else "null"
        except UnicodeDecodeError as error:
            raise ApiError(
                400, "malformed_json", Text("the body is not valid JSON: {error}", error=error)
            ) from None
        if json_depth_exceeds(text, MAX_JSON_DEPTH):
            raise ApiError(
                400,
                "json_too_deep",
                Text("the body nests more than {limit} levels deep", limit=MAX_JSON_DEPTH),
            )
        try:
            return json.loads(text)
        except ValueError as error:
            raise ApiError(
                400, "malformed_json", Text("the body is not valid JSON: {error}", error=error)
            ) from None

    def query(self, schema: type[ModelT]) -> ModelT:
        """The query string as ``schema``: 422 naming each bad or repeated parameter."""
        data: dict[str, str] = {}
        repeated: list[FieldProblem] = []
        for name in schema.model_fields:
            values = self.get_query_arguments(name, strip=False)
            if len(values) > 1:
                repeated.append(FieldProblem(name, Text("give this parameter at most once")))
            elif values:
                data[name] = values[0]
        if repeated:
            raise ApiError(
                422, "validation_error", Text("the query string is invalid"), errors=repeated
            )
        return self.validate(schema, data)

    def validate(self, schema: type[ModelT], data: Any) -> ModelT:
        """``data`` as ``schema``, or 422 with every offending field."""
        try:
            return schema.model_validate(data)
        except ValidationError as error:
            raise ApiError(
                422,
                "validation_error",
                Text("the request is invalid"),
                errors=validation_items(error),
            ) from None

    def respond_json(self, body: bytes, status: int = 200) -> Awaitable[None]:
        """Send JSON already encoded (hot paths assemble it from cached fragments)."""
        self.set_status(status)
        self.set_header("Content-Type", JSON_CONTENT_TYPE)
        return self.finish(body)

    def respond(self, model: BaseModel, status: int = 200) -> Awaitable[None]:
        """Send ``model`` as JSON; the transaction commits before the response leaves."""
        self.set_status(status)
        self.set_header("Content-Type", JSON_CONTENT_TYPE)
        return self.finish(model.model_dump_json())

    # -- transaction: commit before success leaves, roll back on error -----------------------

    def after_commit(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` once this request's transaction has committed, before the response leaves
        (cache invalidations that must not run for a change that is rolled back)."""
        self._after_commit.append(work)

    def publish_after_commit(self, *events: Event) -> None:
        """Evict what these changes made stale, here at once and in every process, once the
        transaction has committed (never for a change that is rolled back)."""

        async def publish() -> None:
            for event in events:
                await self.services.invalidation.publish(event)

        if events:
            self.after_commit(publish)

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        """Settle the transaction, then finish the response (once, however often called)."""
        if self._finishing is not None:
            return self._finishing
        if self._session is None and not self._after_commit:
            return super().finish(chunk)
        self._finishing = asyncio.ensure_future(self._settle_then_finish(chunk))
        return self._finishing

    async def _settle_then_finish(self, chunk: str | bytes | dict[str, Any] | None) -> None:
        session, self._session = self._session, None
        succeeded = self.get_status() < 400
        if not succeeded and self._refusal is not None and session is not None:
            await self._audit_refusal(session, *self._refusal)
        hooks, self._after_commit = self._after_commit, []
        try:
            if session is not None:
                await (session.commit() if succeeded else session.rollback())
        except Exception:
            exc_info = sys.exc_info()
            self._finishing = None
            self.log_exception(*exc_info)
            if not self._headers_written:
                self.send_error(500, exc_info=exc_info)
            return
        finally:
            if session is not None:
                await _close_quietly(session)
        if succeeded:
            for hook in hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("after-commit work failed")
        self._finishing = None
        await super().finish(chunk)

    async def _audit_refusal(self, session: AsyncSession, action: str, detail: str) -> None:
        """Roll the refused change back, then record the refusal in a transaction of its own
        (a failure to record it is logged; the refusal is answered all the same)."""
        self._refusal = None
        actor = self.current_user
        try:
            await session.rollback()
            await AuditRepository(session).add(
                action,
                user_id=actor.user_id if actor else None,
                actor=actor.name if actor else None,
                detail=detail,
                client_ip=self.request.remote_ip,
            )
            await session.commit()
        except Exception:
            log.exception("could not audit a refused change")

    def on_finish(self) -> None:
        """Close a session that was never settled (the client went away mid-request)."""
        session, self._session = self._session, None
        if session is not None:
            self.services.spawn(_close_quietly(session))

    # -- errors --------------------------------------------------------------------------------

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Log bugs with a traceback; expected failures (4xx, database outage) in one line."""
        self.bind_log_context()
        response = classify(value, 500)
        if response.expected:
            if response.status >= 500:
                log.warning(
                    "%s %s: %s (%s)", self.request.method, self.request.path, response.code, value
                )
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Render the one error shape for this handler's flavour."""
        self.bind_log_context()
        exc_info: ExcInfo | None = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        action, detail = getattr(error, "audit_action", None), getattr(error, "audit_detail", None)
        if isinstance(action, str) and isinstance(detail, str):
            self._refusal = (action, detail)  # audited after the rollback, see _settle_then_finish
        response = classify(exc_info[1] if exc_info else None, status_code)
        self.set_status(response.status)
        for name, value in response.headers.items():
            self.set_header(name, value)
        if self.api:
            self.set_header("Content-Type", JSON_CONTENT_TYPE)
            envelope = ErrorEnvelope(
                msg=self.text(response.msg),
                code=response.code,
                errors=[
                    ErrorItem(field=item.field, reason=self.text(item.reason))
                    for item in response.errors
                ],
            )
            self.finish(envelope.model_dump_json())
            return
        self.render_error_page(response.status, self.text(response.msg))

    def render_error_page(self, status: int, message: str) -> None:
        """The HTML error page, with the caller's nav and account area when known.

        ``write_error`` cannot await, so nothing here touches the database: the caller is the
        one ``prepare`` already resolved (None when it never got that far), and their menus
        come from ``services.menus``' cache when it holds them, else none. During an outage the
        page therefore still renders, at worst without menus.
        """
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        principal: Principal | None = None
        menus: list[MenuNode] = []
        try:
            user = self.current_user
            principal = user if isinstance(user, Principal) else None
            if hasattr(self, "services"):
                menus = self.services.menus.cached_tree_for(principal) or []
        except Exception:
            log.exception("the error page could not read the caller's menus")
        try:
            html = self.render_string(
                "errors/error.html",
                status=status,
                heading=self.text(ERROR_HEADINGS.get(status, ERROR_HEADING_OTHER)),
                message=message,
                menus=menus,
                principal=principal,
                flash=None,
                request_id=self.request_id,
            )
        except Exception:
            log.exception("the error page failed to render")
            html = f"<h1>{status}</h1>".encode()
        self.finish(html)


class ApiHandler(BaseHandler):
    """A JSON endpoint: bearer-token auth, CORS, bodies through ``parse``, answers through
    ``respond``, errors as the envelope."""

    api = True
    login: Login | None = None
    cors_allowed = False

    def initialize(self, services: Services, need: Requirement) -> None:
        """Receive the services, then add the CORS headers (the first ``set_default_headers``
        runs before ``initialize``)."""
        super().initialize(services, need)
        self.apply_cors()

    def set_default_headers(self) -> None:
        """Request id, and CORS headers on every answer including errors (seed §4.3)."""
        super().set_default_headers()
        if hasattr(self, "services"):
            self.apply_cors()

    def apply_cors(self) -> None:
        """Allow the request's origin when configured; ``*`` never comes with credentials."""
        self.cors_allowed = False
        origin = self.request.headers.get("Origin")
        allowed = self.services.settings.cors_origins
        if "*" not in allowed:
            self.set_header("Vary", "Origin")
        if origin is None:
            return
        if "*" in allowed:
            self.set_header("Access-Control-Allow-Origin", "*")
        elif origin.rstrip("/") in allowed:
            self.set_header("Access-Control-Allow-Origin", origin)
        else:
            return
        self.cors_allowed = True
        self.set_header("Access-Control-Expose-Headers", "Retry-After, X-Request-Id")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A 405 names the methods this resource supports (RFC 9110 §15.5.6), then the envelope."""
        if status_code == 405:
            self.set_header("Allow", ", ".join([*self.allowed_methods(), "OPTIONS"]))
        super().write_error(status_code, **kwargs)

    async def options(self, *args: str, **kwargs: str) -> None:
        """The CORS preflight: which methods and headers a cross-origin caller may use."""
        if self.cors_allowed:
            self.set_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods()))
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", str(CORS_MAX_AGE))
        self.set_status(204)
        await self.finish()

    def allowed_methods(self) -> list[str]:
        """The HTTP methods this handler implements."""
        return [
            method
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if getattr(type(self), method.lower()) is not getattr(RequestHandler, method.lower())
        ]

    def check_xsrf_cookie(self) -> None:
        """Bearer-token requests carry no ambient credential, so there is nothing to forge;
        only a request that would be authenticated by the browser session cookie is checked."""
        if self.request.headers.get("Authorization") or not self.get_cookie(SESSION_COOKIE):
            return
        super().check_xsrf_cookie()

    async def authenticate(self) -> Principal | None:
        """The principal of the bearer token (a bad or expired one is 401); without one, the
        browser session cookie's (such requests pass the XSRF check)."""
        header = self.request.headers.get("Authorization")
        if header is None:
            return await super().authenticate()
        token = bearer_token(header)
        if token is None:
            raise ApiError(
                401, "invalid_token", Text("send the token as `Authorization: Bearer <token>`")
            )
        try:
            login = await self.services.logins.resolve(token)
        except TokenExpired:
            raise ApiError(
                401, "token_expired", Text("the token has expired or was revoked; log in again")
            ) from None
        if login is None:
            raise ApiError(401, "invalid_token", Text("the token is not valid; log in again"))
        self.login = login
        return login.principal


class PageHandler(BaseHandler):
    """An HTML page: rendered with the caller's menus, errors as the HTML error page."""

    api = False

    def login_required(self) -> NoReturn:
        """Send an anonymous visitor to the login form, coming back here afterwards."""
        target = self.request.uri if self.request.method == "GET" else "/"
        self.redirect_to(f"/login?{urlencode({'next': target})}")

    def redirect_to(self, url: str) -> NoReturn:
        """Answer 302 to ``url`` and stop handling this request (a success: changes are kept)."""
        self.redirect(url)
        raise Finish

    def flash(self, message: Message, *, level: str = "success") -> None:
        """A message shown once, on the next page this browser renders (translated now, in the
        reader's language)."""
        self.set_signed_cookie(
            FLASH_COOKIE,
            json.dumps({"level": level, "text": self.text(message)}),
            expires_days=None,
            path="/",
            httponly=True,
            samesite="Lax",
        )

    def take_flash(self) -> dict[str, str] | None:
        """The pending flash message, cleared once read."""
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=1)
        if raw is None:
            return None
        self.clear_cookie(FLASH_COOKIE, path="/")
        try:
            data = json.loads(raw)
            return {"level": str(data["level"]), "text": str(data["text"])}
        except (ValueError, KeyError, TypeError):
            return None

    async def render_page(self, template: str, **namespace: Any) -> None:
        """Render ``template`` with the caller, their menus and any flash message."""
        menus: list[MenuNode] = await self.services.menus.tree_for(self.current_user)
        namespace.setdefault("flash", self.take_flash())
        await self.render(template, menus=menus, principal=self.current_user, **namespace)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays and objects in the JSON ``text`` nest more than ``limit`` levels deep.

    One linear scan, no recursion, before anything parses the text: brackets inside strings
    (escaped quotes included) are text and do not count. Unbalanced brackets are left for the
    parser to refuse as malformed.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case: too few brackets to be too deep, whatever their order
    depth = 0
    for match in JSON_TOKEN.finditer(text):
        token = match[0]
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


class FormError(Exception):
    """Form input that is refused; ``message`` says why, shown to the person as a flash."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message


def validate_form(schema: type[ModelT], data: dict[str, Any]) -> ModelT:
    """``data`` as ``schema``, or FormError listing each invalid field and why."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        reasons = Joined(
            [
                Text("{field}: {reason}", field=item.field, reason=item.reason)
                if item.field
                else item.reason  # a rule of the whole form names no field
                for item in validation_items(error)
            ]
        )
        raise FormError(Text("The input is not valid ({reasons})", reasons=reasons)) from None


def validation_items(error: ValidationError) -> list[FieldProblem]:
    """The field-by-field reasons of a pydantic ValidationError, as translatable sentences."""
    return [
        FieldProblem(".".join(str(part) for part in detail["loc"]), validation_reason(detail))
        for detail in error.errors(include_url=False, include_input=False)
    ]


async def _close_quietly(session: AsyncSession) -> None:
    try:
        await session.close()
    except Exception:
        log.debug("closing a session failed", exc_info=True)
