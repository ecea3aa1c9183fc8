"""The front as ASGI middleware around dagster-webserver's own app (run in the same
process, so the webserver has no port of its own to bypass the front through).

Every request, in order:

1. **Host** must be one of the allowed ``host:port`` names (DNS rebinding gets nothing).
2. The front's own routes (``/login``, ``/logout``, ``/healthz``) are served here; nothing
   else is reachable without credentials: a session cookie or ``Authorization: Bearer``
   with a service token. Browsers asking for a page are sent to the login page, anything
   else gets 401.
3. A state-changing request (any method but GET/HEAD/OPTIONS) must come from an allowed
   **Origin** (or Referer) when it carries one, and must carry one when authenticated by
   cookie; a cookie-authenticated one must also echo the session's **CSRF token**
   (header ``X-Dataflare-CSRF``; the UI page gets a small script adding it to its fetches).
4. ``/graphql``: the document is parsed; a mutation (or subscription) over GET is refused
   with 405, a POST must be JSON or ``application/graphql``. Each mutation field is mapped
   to an action and resources (``mutations.py``), decided by the authorizer and recorded;
   any denial refuses the whole request with a GraphQL error naming the permission.
   Queries need ``view``.
5. Websockets (GraphQL subscriptions) are authenticated the same way, must come from an
   allowed Origin, and may only start subscriptions, each decided for ``view``.
6. The principal is set in ``CURRENT_PRINCIPAL`` around the downstream call and in the
   scope's state (``dataflare_principal``, read by the webserver's request contexts for
   the UI's permissions, ``ui_permissions.py``), so code in
   the webserver process (the run coordinator) knows who asked.

Decisions on mutations and REST writes are always recorded; ``view`` decisions are
recorded when denied (the UI polls every few seconds; recording every allowed read would
drown the audit log).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
from starlette.datastructures import Headers, QueryParams
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from dataflare_platform.access.decisions import (
    Action,
    Authorizer,
    Decision,
    DecisionRecorder,
    Resource,
)
from dataflare_platform.access.principal import CURRENT_PRINCIPAL, NAME_PATTERN, Principal
from dataflare_platform.errors import (
    AuthenticationError,
    DataflareError,
    IdentityProviderError,
    InvalidInputError,
)
from dataflare_platform.gateway.login_page import (
    LOGIN_CSP,
    render_continue,
    render_login,
    render_logout,
)
from dataflare_platform.gateway.mutations import (
    DEPLOYMENT,
    RequestedField,
    RunLookup,
    parse_document,
    requested_fields,
    resources_of,
)
from dataflare_platform.gateway.providers import PasswordLoginProvider, RedirectLoginProvider
from dataflare_platform.gateway.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginFailures,
    PendingLogins,
    Session,
    SessionStore,
)
from dataflare_platform.gateway.settings import FrontSettings
from dataflare_platform.identity.tokens import ServiceTokens

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Append an audit entry: (actor, action, subject, details).
AuditAppend = Callable[[str, str, str, dict[str, Any]], None]

LOG = logging.getLogger("dataflare.gateway")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_FLOW_COOKIE = "dataflare_login"
SSO_FLOW_COOKIE = "dataflare_sso"
GRAPHQL_PATH = "/graphql"
PRINCIPAL_HEADER = b"x-dataflare-principal"
REPORT_PREFIXES = (
    "/report_asset_materialization/",
    "/report_asset_check/",
    "/report_asset_observation/",
)


class Refusal(DataflareError):  # noqa: N818 - a refusal the front turns into its answer
    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


class Gateway:
    """ASGI middleware: the authenticating front around ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        settings: FrontSettings,
        *,
        tokens: ServiceTokens,
        authorizer: Authorizer,
        recorder: DecisionRecorder,
        audit: AuditAppend | None = None,
        password_providers: list[PasswordLoginProvider] = (),  # type: ignore[assignment]
        redirect_providers: list[RedirectLoginProvider] = (),  # type: ignore[assignment]
        run_lookup: RunLookup | None = None,
        refresh_principal: Callable[[Principal], Principal | None] | None = None,
        sessions: SessionStore,
        pending: PendingLogins,
        login_failures: LoginFailures,
    ) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens
        self.authorizer = authorizer
        self.recorder = recorder
        self.audit = audit
        self.password_providers = {p.name: p for p in password_providers}
        self.redirect_providers = {p.name: p for p in redirect_providers}
        self.run_lookup = run_lookup
        self.refresh_principal = refresh_principal
        # Durable and shared by every front process on the home (gateway/sessions.py).
        self.sessions = sessions
        self.pending = pending
        self.allowed_hosts = settings.host_allowlist()
        self.allowed_origins = settings.origin_allowlist()
        # Password attempts per user name: shared by every front process on the home.
        self.login_failures = login_failures

    # -- entry -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        else:  # lifespan
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            self._check_host(headers)
            if path == "/healthz":
                return await PlainTextResponse("ok")(scope, receive, send)
            if path == "/login" or path.startswith("/login/") or path == "/logout":
                response = await self._own_route(scope, receive, headers)
                return await response(scope, receive, send)
            principal, session = await self._authenticate(headers)
            if principal is None:
                if method in SAFE_METHODS and "text/html" in headers.get("accept", ""):
                    target = quote(_local_path(scope), safe="/")
                    return await RedirectResponse(f"/login?next={target}", 303)(
                        scope, receive, send
                    )
                raise Refusal(401, "authentication required", {"WWW-Authenticate": "Bearer"})
            body = b""
            if method not in SAFE_METHODS:
                self._check_origin(headers, required=session is not None)
                if session is not None and not session.csrf_ok(headers.get(CSRF_HEADER)):
                    raise Refusal(403, "missing or wrong CSRF token")
                body = await _read_body(receive, self.settings.max_body_bytes)
            if path == GRAPHQL_PATH:
                await self._gate_graphql(scope, headers, body, principal)
            elif method == "POST" and path.startswith(REPORT_PREFIXES):
                asset = path.split("/", 2)[2]
                await self._require(principal, "wipe_assets", Resource(kind="asset", name=asset))
            else:
                await self._require(principal, "view", DEPLOYMENT, record_allowed=False)
        except Refusal as refusal:
            return await _refusal_response(refusal, path)(scope, receive, send)
        scope.setdefault("state", {})["dataflare_session"] = session
        await self._downstream(scope, _replay(body, receive) if body else receive, send, principal)

    async def _downstream(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal
    ) -> None:
        # The verified principal also travels as a request header (what Dagster's
        # SubmitRunContext.get_request_header reads); a client's own is dropped first.
        scope = dict(scope)
        scope["headers"] = [
            (k, v) for k, v in scope.get("headers", []) if k.lower() != PRINCIPAL_HEADER
        ] + [(PRINCIPAL_HEADER, principal.id.encode())]
        # The webserver's request contexts read it for the UI's permissions.
        scope["state"] = {**scope.get("state", {}), "dataflare_principal": principal}
        token = CURRENT_PRINCIPAL.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_PRINCIPAL.reset(token)

    # -- checks ------------------------------------------------------------------------
    def _check_host(self, headers: Headers) -> None:
        host = (headers.get("host") or "").lower()
        if host not in self.allowed_hosts:
            raise Refusal(421, "unknown Host: this server answers only to its configured names")

    def _origin_ok(self, headers: Headers, required: bool) -> bool:
        origin = headers.get("origin")
        if origin is not None:
            return origin.lower() in self.allowed_origins
        referer = headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}".lower() in self.allowed_origins
        return not required

    def _check_origin(self, headers: Headers, required: bool) -> None:
        if not self._origin_ok(headers, required):
            raise Refusal(403, "cross-origin request refused (Origin/Referer not allowed)")

    async def _authenticate(self, headers: Headers) -> tuple[Principal | None, Session | None]:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise Refusal(401, "unsupported Authorization scheme (use Bearer)")
            try:
                principal = await anyio.to_thread.run_sync(
                    self.tokens.authenticate, credentials.strip()
                )
            except AuthenticationError as err:
                raise Refusal(401, str(err), {"WWW-Authenticate": "Bearer"}) from None
            return principal, None
        session_id = _cookies(headers).get(SESSION_COOKIE)
        if not session_id:
            return None, None
        session = await anyio.to_thread.run_sync(self._live_session, session_id)
        if session is None:
            return None, None
        return session.principal, session

    def _live_session(self, session_id: str) -> Session | None:
        """The stored session with its principal as it is now (one trip off the loop)."""
        session = self.sessions.get(session_id)
        if session is None or self.refresh_principal is None:
            return session
        # A removed account is out at once; changed roles apply from the next request.
        current = self.refresh_principal(session.principal)
        if current is None:
            self.sessions.drop(session_id)
            return None
        session.principal = current
        return session

    async def _require(
        self,
        principal: Principal,
        action: Action,
        resource: Resource,
        record_allowed: bool = True,
    ) -> Decision:
        decision = self.authorizer.decide(principal, action, resource)
        if record_allowed or not decision.allowed:
            await anyio.to_thread.run_sync(self.recorder.record, decision)
        if not decision.allowed:
            raise _denied(decision)
        return decision

    async def _gate_graphql(
        self, scope: Scope, headers: Headers, body: bytes, principal: Principal
    ) -> None:
        method = scope["method"]
        if method == "GET":
            params = QueryParams(scope.get("query_string", b"").decode("latin-1"))
            query, variables = params.get("query"), params.get("variables")
        elif method == "POST":
            query, variables = _graphql_body(headers, body)
        else:
            raise Refusal(405, "GraphQL takes GET (queries) or POST")
        if query is None:  # the GraphiQL page, or a request dagster refuses itself
            await self._require(principal, "view", DEPLOYMENT, record_allowed=False)
            return
        if isinstance(variables, str):
            try:
                variables = json.loads(variables)
            except json.JSONDecodeError:
                raise Refusal(400, "GraphQL variables are not valid JSON") from None
        if variables is not None and not isinstance(variables, dict):
            raise Refusal(400, "GraphQL variables must be a JSON object")
        try:
            fields = requested_fields(parse_document(query), variables)
        except InvalidInputError as err:
            raise Refusal(400, str(err)) from None
        if method != "POST" and any(f.operation != "query" for f in fields):
            raise Refusal(405, "GraphQL mutations are accepted only by POST", {"Allow": "POST"})
        await self._decide_fields(principal, fields)

    async def _decide_fields(self, principal: Principal, fields: list[RequestedField]) -> None:
        """Every field decided; mutation decisions all recorded before any refusal, so a
        request mixing allowed and denied fields leaves the whole trail."""
        if any(f.operation != "mutation" for f in fields) or not fields:
            await self._require(principal, "view", DEPLOYMENT, record_allowed=False)
        mutations = [f for f in fields if f.operation == "mutation"]
        if not mutations:
            return

        def decide_all() -> list[Decision]:
            decisions = []
            for item in mutations:
                for resource in resources_of(item, self.run_lookup):
                    decision = self.authorizer.decide(principal, item.action, resource)
                    self.recorder.record(decision)
                    decisions.append(decision)
            return decisions

        for decision in await anyio.to_thread.run_sync(decide_all):
            if not decision.allowed:
                raise _denied(decision)

    # -- websockets --------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            self._check_host(headers)
            principal, session = await self._authenticate(headers)
            if principal is None:
                raise Refusal(401, "authentication required")
            self._check_origin(headers, required=session is not None)
            await self._require(principal, "view", DEPLOYMENT, record_allowed=False)
        except Refusal:
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        gate = self

        async def gated_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive" and message.get("text") is not None:
                try:
                    await gate._gate_ws_message(message["text"], principal)
                except Refusal as refusal:
                    # Close the socket; the webserver sees the client leave.
                    await send(
                        {"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]}
                    )
                    return {"type": "websocket.disconnect", "code": 1008}
            return message

        await self._downstream(scope, gated_receive, send, principal)

    async def _gate_ws_message(self, text: str, principal: Principal) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            raise Refusal(400, "not JSON") from None
        if not isinstance(message, dict) or message.get("type") != "start":
            return
        payload = message.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            raise Refusal(400, "subscription without a query")
        variables = payload.get("variables")
        try:
            fields = requested_fields(
                parse_document(payload["query"]), variables if isinstance(variables, dict) else None
            )
        except InvalidInputError as err:
            raise Refusal(400, str(err)) from None
        if any(f.operation != "subscription" for f in fields):
            raise Refusal(405, "only subscriptions over a websocket")
        await self._decide_fields(principal, fields)

    # -- login / logout ----------------------------------------------------------------
    async def _own_route(self, scope: Scope, receive: Receive, headers: Headers):
        path, method = scope["path"], scope["method"]
        if path == "/login" and method == "GET":
            params = QueryParams(scope.get("query_string", b"").decode("latin-1"))
            return self._login_form(_safe_next(params.get("next")), None, 200)
        if path == "/login" and method == "POST":
            self._check_origin(headers, required=True)
            body = await _read_body(receive, 64 * 1024)
            return await self._login_post(headers, body, _client(scope))
        if path == "/logout" and method == "GET":
            session = await anyio.to_thread.run_sync(
                self.sessions.get, _cookies(headers).get(SESSION_COOKIE)
            )
            if session is None:
                return RedirectResponse("/login", 303)
            return HTMLResponse(
                render_logout(csrf=session.csrf, who=session.principal.id),
                headers={
                    "Content-Security-Policy": LOGIN_CSP,
                    "Cache-Control": "no-store",
                    "X-Frame-Options": "DENY",
                },
            )
        if path == "/logout" and method == "POST":
            self._check_origin(headers, required=True)
            body = await _read_body(receive, 64 * 1024)
            session_id = _cookies(headers).get(SESSION_COOKIE)
            session = await anyio.to_thread.run_sync(self.sessions.get, session_id)
            form = _form(body)
            if session is not None:
                if not session.csrf_ok(form.get(CSRF_FIELD) or headers.get(CSRF_HEADER)):
                    raise Refusal(403, "missing or wrong CSRF token")
                await anyio.to_thread.run_sync(self.sessions.drop, session_id)
                await self._audit(session.principal.id, "logout", "session", {})
            response = RedirectResponse("/login", 303)
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        name = path.removeprefix("/login/").removesuffix("/callback")
        provider = self.redirect_providers.get(name)
        if provider is None or method != "GET":
            raise Refusal(404, "no such login method")
        callback_url = f"{self.settings.public_origin()}/login/{name}/callback"
        params = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        if path.endswith("/callback"):
            kept = await anyio.to_thread.run_sync(
                self.pending.take, _cookies(headers).get(SSO_FLOW_COOKIE), name
            )
            if kept is None:
                raise Refusal(400, "login flow expired or unknown: start again")
            try:
                principal = await anyio.to_thread.run_sync(
                    provider.complete, callback_url, dict(params), kept
                )
            except AuthenticationError as err:
                await self._audit("system", "login_failed", f"provider:{name}", {"via": name})
                return self._login_form("/", _shown(err), 401)
            return await self._start_session(
                principal, kept.get("next", "/"), name, _client(scope), cross_site=True
            )
        url, kept = await anyio.to_thread.run_sync(provider.begin, callback_url)
        kept = {**kept, "next": _safe_next(params.get("next"))}
        response = RedirectResponse(url, 303)
        # Lax, not Strict: the provider sends the browser back with a cross-site top-level
        # GET, which must carry this cookie (it only names the one pending flow).
        flow_id = await anyio.to_thread.run_sync(self.pending.put, name, kept)
        self._set_cookie(response, SSO_FLOW_COOKIE, flow_id, f"/login/{name}", samesite="lax")
        return response

    def _login_form(
        self, next_path: str, error: str | None, status: int, provider: str | None = None
    ) -> HTMLResponse:
        csrf = secrets.token_urlsafe(24)
        response = HTMLResponse(
            render_login(
                csrf=csrf,
                next_path=next_path,
                password_providers=[(p.name, p.label) for p in self.password_providers.values()],
                redirect_providers=[(p.name, p.label) for p in self.redirect_providers.values()],
                error=error,
                selected=provider,
            ),
            status_code=status,
            headers={
                "Content-Security-Policy": LOGIN_CSP,
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
            },
        )
        # Login CSRF: the form's token must match this cookie (double submit).
        self._set_cookie(response, LOGIN_FLOW_COOKIE, csrf, "/login")
        return response

    async def _login_post(self, headers: Headers, body: bytes, client: str):
        form = _form(body)
        next_path = _safe_next(form.get("next"))
        flow = _cookies(headers).get(LOGIN_FLOW_COOKIE, "")
        if not flow or not secrets.compare_digest(flow, form.get(CSRF_FIELD, "")):
            return self._login_form(next_path, "the form expired: sign in again", 403)
        provider = self.password_providers.get(form.get("provider") or "local")
        if provider is None:
            return self._login_form(next_path, "unknown sign-in method", 400)
        username = form.get("username", "")
        # Spelled as Principal.id spells the user this sign-in would make.
        qualifier = "" if provider.name == "local" else f"{provider.name}/"
        subject = f"user:{qualifier}{username}" if NAME_PATTERN.match(username) else "user:?"
        if not await anyio.to_thread.run_sync(self.login_failures.reserve, username):
            await self._audit(
                "system",
                "login_refused",
                subject,
                {"reason": "too many failures", "client": client},
            )
            return self._login_form(
                next_path, "too many failed sign-ins: wait and retry", 429, provider.name
            )
        try:
            principal = await anyio.to_thread.run_sync(
                provider.authenticate, username, form.get("password", ""), form.get("code")
            )
        except AuthenticationError as err:  # the reserved attempt stays counted
            await self._audit(
                "system", "login_failed", subject, {"via": provider.name, "client": client}
            )
            return self._login_form(next_path, _shown(err), 401, provider.name)
        await anyio.to_thread.run_sync(self.login_failures.succeeded, username)
        return await self._start_session(principal, next_path, provider.name, client)

    async def _start_session(
        self,
        principal: Principal,
        next_path: str,
        method: str,
        client: str,
        cross_site: bool = False,
    ):
        session_id, _session = await anyio.to_thread.run_sync(self.sessions.create, principal)
        await self._audit(principal.id, "login", "session", {"via": method, "client": client})
        target = _safe_next(next_path)
        if cross_site:
            # After a provider's cross-site redirect, a 303 would keep the navigation
            # cross-site and the browser would withhold the SameSite=Strict session cookie
            # on the next page; a same-site hop from this page sends it.
            response: Any = HTMLResponse(
                render_continue(target),
                headers={"Content-Security-Policy": LOGIN_CSP, "Cache-Control": "no-store"},
            )
            response.delete_cookie(SSO_FLOW_COOKIE, path=f"/login/{method}")
        else:
            response = RedirectResponse(target, 303)
            response.delete_cookie(LOGIN_FLOW_COOKIE, path="/login")
        self._set_cookie(response, SESSION_COOKIE, session_id, "/")
        return response

    def _set_cookie(
        self, response, name: str, value: str, path: str, samesite: str = "strict"
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=int(self.settings.session_ttl_s) if name == SESSION_COOKIE else 600,
            path=path,
            httponly=True,
            samesite=samesite,
            secure=self.settings.tls,
        )

    async def _audit(self, actor: str, action: str, subject: str, details: dict) -> None:
        if self.audit is not None:
            await anyio.to_thread.run_sync(self.audit, actor, action, subject, details)


# -- helpers -----------------------------------------------------------------------------
def _shown(err: AuthenticationError) -> str:
    """What the sign-in page says: the refusal itself, but for a provider that could not
    be used only a generic line (the detail goes to the front's log, never a secret)."""
    if isinstance(err, IdentityProviderError):
        LOG.warning("sign-in provider failure: %s", err)
        return "the sign-in service could not be reached or answered wrongly: try again later"
    return str(err)


def _denied(decision: Decision) -> Refusal:
    resource = decision.resource
    message = (
        f"permission denied: {decision.principal.id} may not {decision.action} "
        f"{resource.kind}:{resource.name} (needs permission '{decision.action}'; "
        f"{decision.reason})"
    )
    return Refusal(
        403,
        message,
        {
            "graphql": {
                "code": "PERMISSION_DENIED",
                "permission": decision.action,
                "resource": f"{resource.kind}:{resource.name}",
                "policy_version": decision.policy_version,
            }
        },
    )


def _refusal_response(refusal: Refusal, path: str):
    extra = dict(refusal.extra)
    extensions = extra.pop("graphql", None)
    if path == GRAPHQL_PATH or extensions is not None:
        # A GraphQL-shaped answer, HTTP 200 for a denial so the UI shows the message.
        status = 200 if extensions is not None else refusal.status
        error: dict[str, Any] = {"message": refusal.message}
        if extensions is not None:
            error["extensions"] = extensions
        return JSONResponse({"data": None, "errors": [error]}, status_code=status, headers=extra)
    return JSONResponse({"error": refusal.message}, status_code=refusal.status, headers=extra)


def _graphql_body(headers: Headers, body: bytes) -> tuple[str | None, Any]:
    raw_type = headers.get("content-type", "")
    essence = raw_type.split(";")[0].strip().lower()
    if essence not in ("application/json", "application/graphql"):
        # Dagster would read such a POST's query string: a plain HTML form could post it.
        raise Refusal(415, "GraphQL POST must be application/json or application/graphql")
    # Read the body as Dagster will: JSON whenever "application/json" appears anywhere in
    # the header (its own test), so both always judge the same document.
    if "application/json" not in raw_type:
        return body.decode("utf-8", "replace"), None
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refusal(400, "GraphQL request is not valid JSON") from None
    if not isinstance(data, dict):
        raise Refusal(400, "GraphQL request must be one JSON object (no batches)")
    query = data.get("query")
    if query is not None and not isinstance(query, str):
        raise Refusal(400, "GraphQL query must be a string")
    return query, data.get("variables")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _cookies(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name and name not in out:
                out[name] = value
    return out


def _form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (another site, a scheme,
    ``//host``, backslashes) becomes ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _client(scope: Mapping[str, Any]) -> str:
    """The peer address, for the audit trail of sign-ins."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _local_path(scope: Mapping[str, Any]) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return scope["path"] + (f"?{query}" if query else "")
