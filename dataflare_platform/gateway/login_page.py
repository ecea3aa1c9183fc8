"""The login page: a plain HTML form (user name, password, one-time code) and a button per
redirect provider. No script, no external asset: its own CSP forbids both."""

from __future__ import annotations

from html import escape

LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f5f6f8;margin:0}
main{max-width:22rem;margin:10vh auto;background:#fff;padding:2rem;border-radius:8px;
box-shadow:0 1px 4px #0002}
h1{font-size:1.3rem;margin:0 0 1.2rem}
label{display:block;margin:.8rem 0 .2rem;font-size:.9rem}
input,select{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem;background:#4f43dd;
color:#fff;border:0;border-radius:4px}
.error{color:#b00020;margin:.5rem 0}
a.provider{display:block;margin-top:.8rem;text-align:center}
"""


def render_login(
    *,
    csrf: str,
    next_path: str,
    password_providers: list[tuple[str, str]],
    redirect_providers: list[tuple[str, str]],
    error: str | None = None,
    selected: str | None = None,
) -> str:
    """The sign-in page; ``selected`` keeps the method of a refused attempt chosen, so a
    directory user who mistyped is not moved to the local accounts."""
    choices = ""
    if len(password_providers) > 1:
        options = "".join(
            f'<option value="{escape(n)}"{" selected" if n == selected else ""}>'
            f"{escape(label)}</option>"
            for n, label in password_providers
        )
        choices = (
            '<label for="provider">Sign in with</label>'
            f'<select id="provider" name="provider">{options}</select>'
        )
    elif password_providers:
        choices = (
            f'<input type="hidden" name="provider" value="{escape(password_providers[0][0])}">'
        )
    links = "".join(
        f'<a class="provider" href="/login/{escape(n)}?next={escape(next_path)}">'
        f"Sign in with {escape(label)}</a>"
        for n, label in redirect_providers
    )
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DataFlare - sign in</title>
<style>{_STYLE}</style></head>
<body><main><h1>DataFlare Platform</h1>{problem}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<input type="hidden" name="next" value="{escape(next_path)}">
{choices}
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="code">One-time code (required for admins)</label>
<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code">
<button type="submit">Sign in</button>
</form>{links}</main></body></html>
"""


def render_logout(*, csrf: str, who: str) -> str:
    """Sign-out is a POST carrying the session's CSRF token (a cross-site link cannot sign
    a user out); this page holds that form."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DataFlare - sign out</title>
<style>{_STYLE}</style></head>
<body><main><h1>DataFlare Platform</h1><p>Signed in as {escape(who)}.</p>
<form method="post" action="/logout">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<button type="submit">Sign out</button>
</form><a class="provider" href="/">Back to the UI</a></main></body></html>
"""


def render_continue(target: str) -> str:
    """The page a single sign-on callback answers with: it moves on to ``target`` (a
    local path) by a same-site refresh, with a link for browsers that do not refresh."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DataFlare - signed in</title>
<meta http-equiv="refresh" content="0;url={escape(target)}">
<style>{_STYLE}</style></head>
<body><main><h1>DataFlare Platform</h1><p>Signed in.</p>
<a class="provider" href="{escape(target)}">Continue</a></main></body></html>
"""
