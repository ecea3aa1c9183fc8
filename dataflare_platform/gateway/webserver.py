"""dagster-webserver's own app, built in the front's process (no port of its own), with
two changes: each request's Dagster context answers permissions from the Cedar policy for
the request's principal (``ui_permissions.py``: the UI disables what the principal may not
do, with the reason, and Dagster's resolvers refuse it too), and the UI page gets a
script, under the page's CSP nonce, that adds the session's CSRF token to the UI's
requests (the front refuses cookie-authenticated writes without it) and a sign-out link."""

from __future__ import annotations

import json
import re
from typing import Any

from dagster_webserver.webserver import DagsterWebserver
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse

from dataflare_platform.access.decisions import Authorizer
from dataflare_platform.access.principal import CURRENT_PRINCIPAL, Principal
from dataflare_platform.gateway.sessions import CSRF_HEADER
from dataflare_platform.gateway.ui_permissions import (
    DecisionCache,
    PolicyPermissions,
    PolicyRequestContext,
)

# Where the front leaves the verified principal in the ASGI scope (session or token).
PRINCIPAL_STATE = "dataflare_principal"

_NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=_-]+)'")
_SCRIPT = """<script nonce="{nonce}">(function(){{
var token={token},header={header};
var original=window.fetch;
window.fetch=function(input,init){{
  init=Object.assign({{}},init||{{}});
  var headers=new Headers(init.headers||(input instanceof Request?input.headers:undefined));
  if(!headers.has(header))headers.set(header,token);
  init.headers=headers;
  return original.call(this,input,init);
}};
var send=XMLHttpRequest.prototype.send,open=XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open=function(){{this.__df=true;return open.apply(this,arguments);}};
XMLHttpRequest.prototype.send=function(){{try{{this.setRequestHeader(header,token);}}catch(e){{}}
return send.apply(this,arguments);}};
document.addEventListener("DOMContentLoaded",function(){{
  var a=document.createElement("a");a.href="/logout";a.textContent="Sign out";
  a.id="dataflare-signout";a.title={who};
  a.style.cssText="position:fixed;right:12px;bottom:8px;z-index:99999;font:12px sans-serif;"+
    "color:#555;background:#fff;padding:2px 6px;border-radius:4px;opacity:.85";
  document.body.appendChild(a);
}});
}})();</script>"""


class GatedWebserver(DagsterWebserver):
    """The webserver whose permissions come from the policy and whose UI page carries the
    front's CSRF token."""

    def __init__(self, *args: Any, authorizer: Authorizer | None = None, **kwargs: Any) -> None:
        if authorizer is None:
            from dataflare_platform.access.policy import load_authorizer

            authorizer = load_authorizer()
        self.authorizer = authorizer
        self.decisions = DecisionCache()
        super().__init__(*args, **kwargs)

    def _make_request_context(self, conn: HTTPConnection) -> PolicyRequestContext:
        # Without a principal (no front in the way) every permission is denied.
        principal = request_principal(conn)
        policy = PolicyPermissions(self.authorizer, principal, self.decisions)
        return PolicyRequestContext.create(self._process_context, conn, policy)

    def index_html_endpoint(self, request: Request):
        response = super().index_html_endpoint(request)
        session = request.scope.get("state", {}).get("dataflare_session")
        found = _NONCE.search(response.headers.get("content-security-policy", ""))
        if session is None or found is None or not isinstance(response, HTMLResponse):
            return response
        script = _SCRIPT.format(
            nonce=found.group(1),
            token=json.dumps(session.csrf),
            header=json.dumps(CSRF_HEADER),
            who=json.dumps(f"signed in as {session.principal.id}"),
        )
        html = bytes(response.body).decode("utf-8").replace("<head>", "<head>" + script, 1)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return HTMLResponse(html, status_code=response.status_code, headers=headers)


def request_principal(conn: HTTPConnection) -> Principal | None:
    """The principal the front verified for this request: left in the scope's state for
    sessions and tokens alike, else the context variable the front sets around the call."""
    found = conn.scope.get("state", {}).get(PRINCIPAL_STATE)
    return found if isinstance(found, Principal) else CURRENT_PRINCIPAL.get()
