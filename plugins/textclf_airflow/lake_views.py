"""The lake's reports and Data Docs, served by the Airflow api-server to logged-in users.

``GET /textclf/lake/KEY`` returns one lake file a reader is meant to open: a model's ``report.html``
or model card, a scoring report, a validation partition's results, profile and Data Docs site, or
``champion.json``. Any other key is a 404, and so is a key with ``..`` in it. The request needs the
same login as the UI (the api-server's token cookie, or a Bearer token), so the links that tasks log
and the approval step shows open in the browser tab that is already logged in. Data Docs pages load
their CSS and JavaScript from files inside the site (docs/validation.md), so they render with no
network. Works for local and S3 lakes alike: the lake is the ``textclf_lake`` Variable (or
``TEXTCLF_LAKE``) and its Connection, read by the api-server when a file is asked for.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import Response

from textclf_airflow import DEFAULT_S3_CONN_ID, LAKE_ENV, LAKE_URL_PREFIX, LAKE_VARIABLE, S3_CONN_ENV, SERVED

# Our own pages run no script at all; GX's Data Docs run theirs, from the site itself only.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
DATA_DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' "
                 "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
                 "base-uri 'self'; form-action 'none'")

app = FastAPI(title="textclf lake files", docs_url=None, redoc_url=None, openapi_url=None)


def _lake() -> Any:
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable

    from textclf.lake import Lake, S3Options

    uri = Variable.get(LAKE_VARIABLE, default_var=None) or os.environ.get(LAKE_ENV)
    if not uri:
        raise HTTPException(404, f"no lake configured: set the Variable {LAKE_VARIABLE} or {LAKE_ENV}")
    s3 = None
    if uri.startswith("s3://"):
        try:
            conn = Connection.get_connection_from_secrets(os.environ.get(S3_CONN_ENV, DEFAULT_S3_CONN_ID))
        except Exception:  # noqa: BLE001 - no Connection: the AWS_* variables apply
            conn = None
        if conn is not None:
            extra = conn.extra_dejson
            s3 = S3Options(endpoint_url=extra.get("endpoint_url"), access_key=conn.login, secret_key=conn.password,
                           region=extra.get("region_name"))
    return Lake(uri, s3=s3)


@app.get("/lake/{key:path}")
def lake_file(key: str, user: Annotated[Any, Depends(get_user)]) -> Response:
    """One servable lake file, with a content type and a Content-Security-Policy."""
    from textclf.errors import TextclfError

    if not SERVED.match(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise HTTPException(404, "not a report, Data Docs or champion file of the lake")
    try:
        data = _lake().read_bytes(key)
    except TextclfError as exc:
        raise HTTPException(404, str(exc).splitlines()[0]) from None
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    if key.endswith(".md"):
        media = "text/plain"
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
               "Content-Security-Policy": DATA_DOCS_CSP if "/data_docs/" in key else REPORT_CSP}
    if media.startswith("text/") or media in ("application/json", "application/javascript"):
        media += "; charset=utf-8"
    return Response(content=data, media_type=media, headers=headers)


class TextclfLakePlugin(AirflowPlugin):
    """Mounts :data:`app` at ``/textclf`` in the api-server."""

    name = "textclf_lake"
    fastapi_apps = [{"app": app, "url_prefix": LAKE_URL_PREFIX.rsplit("/", 1)[0], "name": "textclf lake files"}]
