"""The ``ttscale view`` web app: JSON endpoints over a :class:`~ttscale.view.catalog.Catalog`, the
page (``static/``: plain HTML, CSS and JS, nothing fetched from elsewhere), and the self-contained
export.

Endpoints (all GET):

- ``/api/index``: the inputs, every run's summary, every sweep;
- ``/api/state``: picks up appended results, returns ``{version, runs: {id: {problems, bytes}}}``
  (the page polls it and reloads what it shows when ``version`` moves);
- ``/api/runs/{id}``: one run's summary;
- ``/api/runs/{id}/problems?offset=&limit=&sort=&desc=&q=&status=``: a page of the problems table;
- ``/api/runs/{id}/problems/{index}``: one problem in full (candidates, votes, tree, trace);
- ``/api/sweeps/{id}``: curves, policy table and configuration summary; ``/api/sweeps/{id}/plot.png``:
  the matplotlib figure of ``ttscale plot``.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ttscale.core.errors import ConfigError
from ttscale.view.catalog import Catalog
from ttscale.view.data import TableRun, page
from ttscale.view.detail import problem_detail
from ttscale.view.sweeps import sweep_png, sweep_view

ASSETS = ("app.css", "app.js", "tree.js", "charts.js")
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def asset(name: str) -> str:
    """The text of one file of ``ttscale/view/static``."""
    return resources.files("ttscale.view").joinpath("static", name).read_text(encoding="utf-8")


def clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities as null, unknown objects as their str."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    if v is None or isinstance(v, str | int | bool):
        return v
    return str(v)


def _json(data: Any) -> JSONResponse:
    return JSONResponse(clean(data))


def _get(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except KeyError as e:
        raise HTTPException(404, str(e.args[0]) if e.args else "not found") from e
    except ConfigError as e:
        raise HTTPException(400, str(e)) from e


def detail_of(cat: Catalog, rid: str, index: int) -> dict[str, Any]:
    run = cat.run(rid)
    return problem_detail(run.record(index), index, from_table=isinstance(run, TableRun))


def create_app(cat: Catalog) -> FastAPI:
    """The app serving ``cat`` (see the module docstring)."""
    app = FastAPI(title="ttscale view", docs_url=None, redoc_url=None, openapi_url=None)
    cache: dict[tuple[str, int], dict[str, Any]] = {}

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return HTMLResponse(asset("index.html"))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        return Response(asset(name), media_type=_TYPES[name[name.rfind("."):]])

    @app.get("/api/index")
    def index() -> JSONResponse:
        cat.refresh()
        return _json(cat.index())

    @app.get("/api/state")
    def state() -> JSONResponse:
        cat.refresh()
        return _json(cat.state())

    @app.get("/api/runs/{rid}")
    def run_summary(rid: str) -> JSONResponse:
        return _json(_get(lambda: cat.run(rid).summary()))

    @app.get("/api/runs/{rid}/problems")
    def problems(rid: str, offset: int = 0, limit: int = Query(50, ge=1, le=1000), sort: str = "index",
                 desc: bool = False, q: str = "", status: str = "all") -> JSONResponse:
        return _json(_get(lambda: page(cat.run(rid).rows, offset=offset, limit=limit, sort=sort, desc=desc,
                                       q=q, status=status)))

    @app.get("/api/runs/{rid}/problems/{index}")
    def problem(rid: str, index: int) -> JSONResponse:
        return _json(_get(detail_of, cat, rid, index))

    @app.get("/api/sweeps/{sid}")
    def sweep(sid: str) -> JSONResponse:
        key = (sid, cat.version)
        if key not in cache:
            cache[key] = _get(lambda: sweep_view(cat.sweep(sid)))
        return _json(cache[key])

    @app.get("/api/sweeps/{sid}/plot.png")
    def plot(sid: str) -> Response:
        return Response(_get(lambda: sweep_png(cat.sweep(sid))), media_type="image/png")

    return app


def export_html(cat: Catalog) -> str:
    """One self-contained page: the assets inlined and every endpoint's data embedded (each run's
    rows and every problem's detail; the page pages and sorts them itself)."""
    data: dict[str, Any] = {"index": cat.index(), "runs": {}, "sweeps": {}}
    for rid, run in cat.runs.items():
        data["runs"][rid] = {"summary": run.summary(), "rows": run.rows,
                             "details": [detail_of(cat, rid, i) for i in range(len(run.rows))]}
    for sid, sw in cat.sweeps.items():
        data["sweeps"][sid] = sweep_view(sw)
    blob = json.dumps(clean(data)).replace("</", "<\\/")
    page_html = asset("index.html")
    page_html = page_html.replace('<link rel="stylesheet" href="static/app.css">', f"<style>{asset('app.css')}</style>")

    def inline(m: re.Match[str]) -> str:
        return f"<script>{asset(m.group(1))}</script>"

    page_html = page_html.replace("<!--DATA-->", f'<script id="ttscale-data" type="application/json">{blob}</script>')
    return re.sub(r'<script src="static/([a-z]+\.js)"></script>', inline, page_html)
