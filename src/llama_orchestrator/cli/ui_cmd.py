"""``llama-orch ui``: a login link to the web page the daemon serves, as Jupyter does."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llama_orchestrator.cli.common import daemon_client, fail, home_of, say

app = typer.Typer()


@app.command()
def ui(
    ctx: typer.Context,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the link; do not open a browser.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"url": ...}; opens no browser.')
    ] = False,
) -> None:
    """Open the web page (instances, activity, devices, playground).

    Prints a one-time login link (valid 2 minutes, single use) and opens it in the
    browser; the page then keeps a session cookie until the daemon restarts. From
    another machine: ssh -L 7070:127.0.0.1:PORT host, then open the link with
    localhost:7070 in place of 127.0.0.1:PORT.

    Examples: llama-orch ui; llama-orch ui --no-browser; llama-orch ui --json
    """
    client = daemon_client(home_of(ctx))
    try:
        reply = client.post("/v1/ui/login-codes", timeout=10)
    except OSError as e:
        fail(f"the daemon at {client.url} did not answer: {e}")
    if not reply.ok or not isinstance(reply.body, dict) or "path" not in reply.body:
        detail = reply.body.get("detail") if isinstance(reply.body, dict) else reply.body
        fail(f"the daemon refused a login code ({reply.status}): {detail}")
    url = client.url + reply.body["path"]
    print(json.dumps({"url": url}) if as_json else url, flush=True)
    if no_browser or as_json:
        return
    import webbrowser

    if webbrowser.open(url):
        say(f"opened the web page (the link works once, for {reply.body['expires_in']:.0f} s)")
    else:
        say("no browser found here: open the link above in one")
