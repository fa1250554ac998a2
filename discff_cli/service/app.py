"""The FastAPI application of `discff serve`: routes, bearer-token check, and errors as JSON sentences.

Every answer that is not a success is `{"error": "One sentence."}` with a 4xx/5xx status; the
traceback of an unexpected failure goes to the server log, never to the client. Files are served
by index id only: the id picks a row of the index, and the file must lie inside the index's root.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from discff_cli.errors import DiscffError
from index.errors import IndexError_
from index.containers import names_member
from discff_cli.engine.config import SCORES
from discff_cli.render.output import to_json
from discff_cli.search.request import HTTP, Limits, SearchRequest, search_request
from discff_cli.service.explain_job import ExplainQuery, run_explain
from discff_cli.service.knn import KnnError, index_name, metadata_rows, parse_knn, run_knn
from discff_cli.service.queries import run_query
from discff_cli.service.thumbs import ThumbCache
from discff_cli.service.worker import FAST, SLOW, ModelWorker, QueueFull

STATIC = Path(__file__).parent / "static"
COOKIE = "discff_token"
OPEN_PATHS = frozenset({"/healthz"})
log = logging.getLogger("discff.serve")


@dataclass(frozen=True)
class ServeSettings:
    """Limits and options of one service; the defaults are `discff serve`'s."""

    index_dir: str
    token: str | None = None
    timeout_s: float = 300.0
    max_top: int = 200
    max_rerank: int = 100
    max_query_chars: int = 500
    thumb_size: int = 256
    threads: int | None = None         # torch/FAISS threads for reranks (None: torch's default)
    shortlist_threads: int | None = 1  # for shortlist-only queries, too small to split across threads


class BadRequest(Exception):
    """A request the client can fix; answered 400 with the message."""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(worker: ModelWorker, settings: ServeSettings) -> FastAPI:
    """The service over a started `worker` (whose models are a `TimedSearcher`)."""
    app = FastAPI(title="discff", docs_url=None, redoc_url=None, openapi_url=None)
    thumbs = ThumbCache(Path(settings.index_dir) / "thumbs", settings.thumb_size)
    _install_errors(app)
    _install_auth(app, settings.token)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "queued": worker.queued}

    @app.get("/")
    def page(request: Request) -> Response:
        if settings.token and request.query_params.get("token"):  # the link printed at start-up
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
            return response
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/info")
    def info() -> dict:
        from discff_cli.engine.explain import MAPPED
        from discff_cli.search.fusion import FUSIONS

        searcher = worker.models
        return {"index": str(Path(settings.index_dir).resolve()), **searcher.index.manifest,
                "service": {"model": searcher.model, "engine": searcher.config.to_dict(),
                            "scores": list(SCORES), "score": searcher.config.score,
                            "fusions": list(FUSIONS), "fusion": searcher.fusion.method,
                            "fusion_weight": searcher.fusion.weight, "explain_scores": list(MAPPED),
                            "max_top": settings.max_top, "max_rerank": settings.max_rerank,
                            "max_query_chars": settings.max_query_chars, "timeout_s": settings.timeout_s,
                            "queued": worker.queued, "max_queue": worker.max_queue,
                            "rerank_model_loaded": searcher.scorer_loaded}}

    @app.get("/search")
    async def search(request: Request) -> Response:
        received = time.perf_counter()
        try:
            query = parse_query(dict(request.query_params), settings)
        except BadRequest as exc:
            return error(400, str(exc))
        threads = settings.threads if query.rerank else settings.shortlist_threads
        job = partial(run_query, query=query, received=received, threads=threads)
        return await run_job(job, SLOW if query.rerank else FAST, "search")

    async def run_job(job, priority: int, what: str) -> Response:
        """Queue `job` for the one model worker; its answer, or 503/504/500 as one sentence."""
        try:
            future = worker.submit(job, priority)
        except QueueFull as exc:
            return error(503, f"The server is busy ({worker.max_queue} requests queued); retry in "
                              f"{exc.retry_after} s.", {"Retry-After": str(exc.retry_after)})
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout_s)
            return Response(to_json(answer)[0], media_type="application/json")  # as `--json` serialises it
        except asyncio.TimeoutError:
            hint = "ask for a smaller rerank depth" if what == "search" else "retry when the server is less busy"
            return error(504, f"The {what} took longer than the {settings.timeout_s:g} s limit; {hint}.")
        except (DiscffError, IndexError_) as exc:  # e.g. an indexed file deleted since the build
            return error(500, str(exc))

    name = index_name(settings.index_dir)

    @app.get("/indices-list")
    def indices_list() -> list:
        """clip-retrieval's list of the indices this back end serves: this one."""
        return [name]

    @app.post("/knn-service")
    async def knn_service(request: Request) -> Response:
        """clip-retrieval's search (discff_cli/service/knn.py), plus discff's "rerank": N."""
        try:
            query = parse_knn(await request.body(), name, settings, worker.models.clip.dim, str(request.base_url))
        except KnnError as exc:
            return error(400, str(exc))
        threads = settings.threads if query.rerank else settings.shortlist_threads
        job = partial(_threaded, run_knn, threads=threads, searcher_query=query)
        response = await run_job(job, SLOW if query.rerank else FAST, "search")
        if query.ignored and response.status_code == 200:
            response.headers["X-Discff-Ignored"] = ", ".join(query.ignored)
        return response

    @app.post("/metadata")
    async def metadata(request: Request) -> Response:
        """clip-retrieval's metadata of index ids: caption, url, path."""
        try:
            return JSONResponse(metadata_rows(worker.models, await request.body(), name))
        except KnnError as exc:
            return error(400, str(exc))

    @app.get("/explain")
    async def explain(request: Request) -> Response:
        received = time.perf_counter()
        try:
            query = parse_explain(dict(request.query_params), settings, len(worker.models.index.rel_by_row))
        except BadRequest as exc:
            return error(400, str(exc))
        path = indexed_file(worker.models, query.item_id)
        job = partial(run_explain, query=query, path=path, received=received, threads=settings.threads)
        return await run_job(job, SLOW, "explaining")

    @app.get("/images/{item_id}")
    def image(item_id: int) -> Response:
        from index.containers import media_type, read_member

        path = indexed_file(worker.models, item_id)
        try:
            member = read_member(path)  # None: a loose file
        except (OSError, EOFError) as exc:
            return error(404, f"Image {item_id} cannot be read from its shard or parquet file ({exc}).")
        if member is None:
            return FileResponse(path)
        return Response(member, media_type=media_type(member, path.name))

    @app.get("/thumbs/{item_id}")
    def thumb(item_id: int) -> Response:
        from index.imageio import ImageDecodeError

        searcher = worker.models
        try:
            data = thumbs.get(indexed_file(searcher, item_id), searcher.index.root)
        except (ImageDecodeError, OSError) as exc:
            return error(404, f"Image {item_id} cannot be read ({exc}).")
        return Response(data, media_type="image/jpeg")

    return app


def _threaded(run, searcher, threads: int | None, searcher_query):
    """`run(searcher, query)` on the model worker with `threads` CPU threads."""
    from discff_cli.service.queries import cpu_threads

    with cpu_threads(threads):
        return run(searcher, searcher_query)


# A /search URL's parameters, and the SearchRequest field each one fills (the page links use q and weight).
PARAMS = {"q": "query", "top": "top", "rerank": "rerank", "score": "score", "fusion": "fusion",
          "weight": "fusion_weight"}


def parse_query(params: dict[str, str], settings: ServeSettings) -> SearchRequest:
    """/search's parameters as a SearchRequest, checked by the one `search_request` the command line and
    `--queries` use, under the service's limits; raises BadRequest with one sentence. An empty parameter
    is an absent one, and rerank=0 is no rerank."""
    values = {field: params[name] for name, field in PARAMS.items() if params.get(name)}
    values.setdefault("query", params.get("q", ""))
    try:
        request = search_request(values, request_limits(settings), HTTP)
    except DiscffError as exc:
        raise BadRequest(str(exc)) from None
    return request if request.rerank else replace(request, rerank=None)


def request_limits(settings: ServeSettings) -> Limits:
    return Limits(max_top=settings.max_top, max_rerank=settings.max_rerank, max_query_chars=settings.max_query_chars)


def parse_explain(params: dict[str, str], settings: ServeSettings, count: int) -> ExplainQuery:
    """Validate /explain's parameters: an index id, the query and score as /search takes them, a score with a map."""
    from discff_cli.engine.explain import MAPPED

    raw = params.get("id", "")
    if not raw.isdigit() or int(raw) >= count:
        raise BadRequest(f"Give the index id of an image as id, a whole number from 0 to {count - 1}.")
    values = {"query": params.get("q", ""), **({"score": params["score"]} if params.get("score") else {})}
    try:
        request = search_request(values, request_limits(settings), replace(HTTP, example="/explain?id=0&q=a+red+cube"))
    except DiscffError as exc:
        raise BadRequest(str(exc)) from None
    if request.score is not None and request.score not in MAPPED:
        raise BadRequest(f"score must be one of {', '.join(s for s in SCORES if s in MAPPED)}, not "
                         f"{request.score!r}; the others have no map.")
    return ExplainQuery(int(raw), request.query, request.score)


def indexed_file(searcher, item_id: int) -> Path:
    """The file of index id `item_id`, refused (404) unless it lies inside the index's root, links resolved."""
    try:
        path = searcher.image_path(item_id)
    except DiscffError as exc:
        raise StarletteHTTPException(404, str(exc)) from None
    root = os.path.realpath(searcher.index.root)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise StarletteHTTPException(404, f"Image {item_id} lies outside the indexed folder; it is not served.")
    if not os.path.isfile(real) and not names_member(real):  # a loose file, a shard member, a parquet row
        raise StarletteHTTPException(404, f"Image {item_id} is no longer on disk; rebuild the index.")
    return Path(real)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: f"Nothing is served at {request.url.path[:100]}.",
                    405: f"{request.method} is not allowed on {request.url.path[:100]}; use "
                         f"{(getattr(exc, 'headers', None) or {}).get('Allow', 'GET')}."}
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail.endswith(".") else None
        return error(exc.status_code, detail or messages.get(exc.status_code, "The request was refused."),
                     getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = [str(part) for e in exc.errors()[:1] for part in e.get("loc", ())[1:]]
        name = where[0] if where else "a parameter"
        return error(404 if name == "item_id" else 400,
                     "Images are served by their index id, a whole number." if name == "item_id"
                     else f"{name} is not valid.")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, "The server failed on this request; its log has the details.")


def _install_auth(app: FastAPI, token: str | None) -> None:
    """With a token, every route but /healthz needs `Authorization: Bearer TOKEN` (or the page's cookie)."""
    if not token:
        return
    expected = token.encode()

    def allowed(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        sent = header[7:] if header[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")
        if request.url.path == "/" and not sent:
            sent = request.query_params.get("token", "")
        return hmac.compare_digest(sent.encode(), expected)

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if request.url.path in OPEN_PATHS or allowed(request):
            return await call_next(request)
        return error(401, "This server needs its token: send 'Authorization: Bearer TOKEN' "
                          "(or open /?token=TOKEN in a browser).", {"WWW-Authenticate": "Bearer"})
