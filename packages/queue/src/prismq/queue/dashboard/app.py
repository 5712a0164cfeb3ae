"""The dashboard's ASGI application: routes, safety checks and page data.

Every page is rendered on the server (Jinja2); htmx refreshes parts of pages in place and
uPlot draws the overview's charts, both served from this package's static folder.

Safety:

- Actions are POST forms carrying a CSRF token that must equal the ``prismq_csrf``
  cookie (a random value set on the first page, ``SameSite=Strict``); a request whose
  ``Origin`` names another host is refused as well.
- ``read_only=True`` hides every action and answers 403 to any POST.
- ``token`` (a bearer token, or ``?token=`` once in a browser, which sets a cookie) or
  ``basic_auth`` guards every route but the static files.
- ``mask`` rewrites payloads and results before they are shown (see :func:`mask_fields`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..backends.base import QueueStats
from ..client import QueueClient
from ..database import QueueDatabase
from ..errors import ConfigError, QueueError, ScheduleNotFoundError, TaskNotFoundError, ValidationError
from ..models import Task, TaskStatus
from ..validation import is_number

__all__ = ["MaskHook", "create_app", "mask_fields"]

log = logging.getLogger("prismq.queue.dashboard")

MaskHook = Callable[[str, Any], Any]
"""``mask(task_type, value) -> value shown``: called for every payload and result shown."""

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
CSRF_COOKIE = "prismq_csrf"
TOKEN_COOKIE = "prismq_token"  # noqa: S105 (a cookie name, not a secret)
STALE_AFTER = 60.0
HISTORY_WINDOW = 3600.0
HISTORY_STEP = 60.0
STATUSES = [s.value for s in TaskStatus]
# Content Security Policy: everything from this server, nothing inline but styles.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def mask_fields(names: Iterable[str], replacement: str = "***") -> MaskHook:
    """A ``mask`` hook that hides the values of these keys, at any depth of the JSON.

    Args:
        names: Keys whose values are replaced (compared case-insensitively).
        replacement: What is shown instead.

    Example:
        >>> hide = mask_fields(["password"])
        >>> hide("login", {"user": "ann", "password": "s3cret", "nested": [{"Password": 1}]})
        {'user': 'ann', 'password': '***', 'nested': [{'Password': '***'}]}
    """
    hidden = {n.lower() for n in names}

    def mask(_task_type: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: replacement if str(k).lower() in hidden else mask(_task_type, v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [mask(_task_type, v) for v in value]
        return value

    return mask


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _parse_time(text: str | None, name: str) -> float | None:
    """A ``YYYY-MM-DDTHH:MM[:SS]`` form value (UTC) as epoch seconds; empty means none."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{name} must be a date and time like 2026-01-31T12:00, got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class _Filter:
    """The task filter of a request (query string or form): status, type, times, text."""

    def __init__(self, values: Any) -> None:
        self.status = values.get("status") or ""
        self.task_type = values.get("type") or ""
        self.since = values.get("since") or ""
        self.until = values.get("until") or ""
        self.search = values.get("q") or ""
        if self.status and self.status not in STATUSES:
            raise ValidationError(f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}")

    def client_args(self) -> dict[str, Any]:
        return {
            "status": self.status or None,
            "task_type": self.task_type or None,
            "since": _parse_time(self.since, "since"),
            "until": _parse_time(self.until, "until"),
            "search": self.search or None,
        }

    def query(self, **extra: str) -> str:
        values = {"status": self.status, "type": self.task_type, "since": self.since, "until": self.until}
        values["q"] = self.search
        values.update(extra)
        return urlencode({k: v for k, v in values.items() if v})


class _Guard(BaseHTTPMiddleware):
    """Authentication, the CSRF cookie, read-only refusal and security headers."""

    def __init__(
        self, app: Any, token: str | None, basic_auth: tuple[str, str] | None, read_only: bool
    ) -> None:
        super().__init__(app)
        self.token = token
        self.basic = None if basic_auth is None else f"{basic_auth[0]}:{basic_auth[1]}".encode()
        self.read_only = read_only

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.token is not None:
            offered = request.cookies.get(TOKEN_COOKIE, "")
            if header.lower().startswith("bearer "):
                offered = header[7:].strip()
            return hmac.compare_digest(offered.encode(), self.token.encode())
        if self.basic is not None:
            if not header.lower().startswith("basic "):
                return False
            try:
                given = base64.b64decode(header[6:].strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(given, self.basic)
        return True

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if self.token is not None and request.method == "GET":
            offered = request.query_params.get("token")
            if offered is not None and hmac.compare_digest(offered.encode(), self.token.encode()):
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                target = request.url.path + (f"?{rest}" if rest else "")
                response: Response = RedirectResponse(target, status_code=303)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return response
        if not path.startswith(f"{request.scope.get('root_path', '')}/static/") and not self._authorised(
            request
        ):
            headers = {"WWW-Authenticate": 'Basic realm="prismq-queue"'} if self.basic else {}
            return PlainTextResponse("authentication required", status_code=401, headers=headers)
        if request.method == "POST":
            if self.read_only:
                return PlainTextResponse("the dashboard is read-only", status_code=403)
            origin = request.headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
                return PlainTextResponse("cross-site request refused", status_code=403)
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        request.state.csrf = csrf
        response = await call_next(request)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


class Dashboard:
    """The routes of one dashboard over one queue database (see :func:`create_app`)."""

    def __init__(self, db: QueueDatabase, read_only: bool, mask: MaskHook | None, stale_after: float) -> None:
        self.db = db
        self.client = QueueClient(db)
        self.read_only = read_only
        self.mask = mask
        self.stale_after = stale_after
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters["when"] = _when
        env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True)
        env.filters["brief"] = lambda v: json.dumps(v, ensure_ascii=False)[:120]
        env.globals["statuses"] = STATUSES
        self._stats_lock = threading.Lock()
        self._stats_cache: tuple[float, float, QueueStats] | None = None

    def _stats(self) -> QueueStats:
        """The queue's statistics, reused while younger than ten times what they cost.

        The counts are aggregates over the whole table (about a second at a million
        tasks); however many browsers refresh the overview, the database spends at most a
        tenth of its time on them.
        """
        with self._stats_lock:
            cached = self._stats_cache
            if cached is not None and time.monotonic() < cached[0]:
                return cached[2]
            started = time.monotonic()
            stats = self.client.stats()
            ended = time.monotonic()
            self._stats_cache = (ended + 10 * (ended - started), ended, stats)
            return stats

    # -- helpers -----------------------------------------------------------------
    def _render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.update(
            read_only=self.read_only,
            csrf=request.state.csrf,
            page=name.split(".")[0],
            root=request.scope.get("root_path", ""),
            notice=request.query_params.get("notice"),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def _shown(self, task: Task) -> dict[str, Any]:
        """A task as the templates show it, payload and result masked."""
        payload, result = task.payload, task.result
        if self.mask is not None:
            payload = self.mask(task.task_type, payload)
            result = None if result is None else self.mask(task.task_type, result)
        return {"task": task, "payload": payload, "result": result}

    async def _form(self, request: Request) -> Any:
        form = await request.form()
        given = str(form.get("csrf", ""))
        if not given or not hmac.compare_digest(given.encode(), request.state.csrf.encode()):
            raise _Refused("the form's CSRF token is missing or stale; reload the page and try again")
        return form

    def _back(self, request: Request, fallback: str, message: str) -> Response:
        """Redirect after an action to a page of this dashboard, with a notice."""
        target = request.query_params.get("next") or fallback
        if not target.startswith("/") or target.startswith(("//", "/\\")):
            target = fallback
        root = request.scope.get("root_path", "")
        sep = "&" if "?" in target else "?"
        return RedirectResponse(f"{root}{target}{sep}{urlencode({'notice': message})}", status_code=303)

    def _actor(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def _error(self, request: Request, exc: Exception, status_code: int) -> Response:
        return self._render(request, "error.html", status_code=status_code, message=str(exc))

    # -- pages -------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        return self._render(request, "overview.html", stats=self._stats(), paused=self.client.paused())

    def overview_counts(self, request: Request) -> Response:
        return self._render(request, "_counts.html", stats=self._stats())

    def overview_data(self, request: Request) -> Response:
        """The charts' data: finished per minute over the last hour, and the depth now."""
        now = self.db.now()
        buckets = int(HISTORY_WINDOW // HISTORY_STEP)
        series: dict[str, list[int]] = {s: [0] * buckets for s in ("completed", "dead", "cancelled")}
        for bucket, status, count in self.client.finished_histogram(HISTORY_WINDOW, HISTORY_STEP):
            if 0 <= bucket < buckets and status in series:
                series[status][bucket] += count
        start = now - HISTORY_WINDOW
        counts = self._stats().by_status
        return JSONResponse(
            {
                "now": now,
                "times": [start + (i + 1) * HISTORY_STEP for i in range(buckets)],
                "completed": series["completed"],
                "failed": series["dead"],
                "cancelled": series["cancelled"],
                "depth": {"queued": counts["queued"], "leased": counts["leased"]},
            }
        )

    def types(self, request: Request) -> Response:
        counts = self.client.count_by_type()
        paused = self.client.paused()
        names = sorted(set(counts) | set(paused))
        rows = [{"name": n, "counts": counts.get(n, {}), "paused": paused.get(n)} for n in names]
        return self._render(request, "types.html", rows=rows)

    def tasks(self, request: Request) -> Response:
        try:
            chosen = _Filter(request.query_params)
            page = self.client.page(
                **chosen.client_args(), cursor=request.query_params.get("cursor") or None, limit=PAGE_SIZE
            )
        except ValidationError as exc:
            return self._error(request, exc, 400)
        return self._render(
            request,
            "tasks.html",
            filter=chosen,
            rows=[self._shown(t) for t in page.tasks],
            next_query=None if page.next_cursor is None else chosen.query(cursor=page.next_cursor),
            first=not request.query_params.get("cursor"),
            types=sorted(self.client.count_by_type()),
            this_page=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        )

    def task(self, request: Request) -> Response:
        try:
            task = self.client.get(int(request.path_params["task_id"]))
        except (TaskNotFoundError, ValidationError) as exc:
            return self._error(request, exc, 404)
        return self._render(request, "task.html", **self._shown(task))

    def workers(self, request: Request) -> Response:
        now = datetime.fromtimestamp(self.db.now(), tz=timezone.utc)
        running: dict[str, list[Task]] = defaultdict(list)
        cursor = None
        while True:  # leased tasks are the ones in flight: a few per worker
            page = self.client.page(status="leased", cursor=cursor, limit=1000)
            for task in page.tasks:
                running[task.locked_by or ""].append(task)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        rows = [
            {"info": w, "stale": w.is_stale(now, self.stale_after), "tasks": running.pop(w.worker_id, [])}
            for w in self.client.list_workers()
        ]
        return self._render(
            request, "workers.html", rows=rows, orphans=dict(running), stale_after=self.stale_after
        )

    def schedules(self, request: Request) -> Response:
        return self._render(request, "schedules.html", rows=self.client.schedules.list())

    def metrics(self, request: Request) -> Response:
        try:
            from ..observability.metrics import metrics_exposition
        except ImportError:  # the metrics extra is not installed (ExtraNotInstalledError)
            return PlainTextResponse(
                "Prometheus metrics are not available in this installation\n", status_code=404
            )
        body, content_type = metrics_exposition(self.db)
        return Response(body, media_type=content_type)

    # -- actions -----------------------------------------------------------------
    async def task_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        task_id = int(request.path_params["task_id"])
        if action not in ("retry", "cancel", "delete"):
            return PlainTextResponse("not found", status_code=404)
        try:
            await self._form(request)
            run: dict[str, Callable[[int], object]] = {
                "retry": self.client.retry,
                "cancel": self.client.cancel,
                "delete": self.client.delete,
            }
            await run_in_threadpool(run[action], task_id)
        except _Refused as exc:
            return self._error(request, exc, 403)
        except TaskNotFoundError as exc:
            return self._error(request, exc, 404)
        except QueueError as exc:
            return self._error(request, exc, 409)
        log.info("dashboard: %s task %d (from %s)", action, task_id, self._actor(request))
        fallback = "/tasks" if action == "delete" else f"/tasks/{task_id}"
        return self._back(request, fallback, f"{action}: task {task_id}")

    async def bulk_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("retry", "cancel"):
            return PlainTextResponse("not found", status_code=404)
        try:
            form = await self._form(request)
            chosen = _Filter(form)
            run = self.client.retry_many if action == "retry" else self.client.cancel_many
            changed = await run_in_threadpool(lambda: run(**chosen.client_args()))
        except _Refused as exc:
            return self._error(request, exc, 403)
        except QueueError as exc:
            return self._error(request, exc, 400)
        log.info(
            "dashboard: bulk %s of %d tasks matching %s (from %s)",
            action,
            changed,
            chosen.query() or "every task",
            self._actor(request),
        )
        return self._back(request, f"/tasks?{chosen.query()}", f"{action}: {changed} tasks")

    async def type_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            return PlainTextResponse("not found", status_code=404)
        try:
            form = await self._form(request)
            task_type = str(form.get("task_type", ""))
            change = self.client.pause if action == "pause" else self.client.resume
            changed = await run_in_threadpool(change, task_type)
        except _Refused as exc:
            return self._error(request, exc, 403)
        except QueueError as exc:
            return self._error(request, exc, 400)
        log.info("dashboard: %s task type %r (from %s)", action, task_type, self._actor(request))
        done = f"{action}d" if changed else f"already {action}d"
        return self._back(request, "/types", f"{task_type}: {done}")

    async def schedule_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume", "run"):
            return PlainTextResponse("not found", status_code=404)
        try:
            form = await self._form(request)
            name = str(form.get("name", ""))
            schedules = self.client.schedules
            if action == "run":
                task_id = await run_in_threadpool(schedules.run_now, name)
            else:
                change = schedules.pause if action == "pause" else schedules.resume
                await run_in_threadpool(change, name)
        except _Refused as exc:
            return self._error(request, exc, 403)
        except ScheduleNotFoundError as exc:
            return self._error(request, exc, 404)
        except QueueError as exc:
            return self._error(request, exc, 400)
        if action == "run":
            log.info("dashboard: run schedule %r now: task %d (from %s)", name, task_id, self._actor(request))
            return self._back(request, "/schedules", f"{name}: enqueued task {task_id}")
        log.info("dashboard: %s schedule %r (from %s)", action, name, self._actor(request))
        return self._back(request, "/schedules", f"{name}: {action}d")


class _Refused(Exception):
    """A POST without a valid CSRF token."""


def create_app(
    db: QueueDatabase,
    *,
    read_only: bool = False,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    mask: MaskHook | None = None,
    stale_after: float = STALE_AFTER,
) -> Starlette:
    """The dashboard as an ASGI application over an open queue database.

    Args:
        db: The queue database (the caller opens and closes it).
        read_only: Show everything and change nothing: no action is shown or accepted.
        token: Require this secret: ``Authorization: Bearer <token>``, or open any page
            once with ``?token=<token>`` in a browser (a cookie keeps it).
        basic_auth: Require HTTP basic authentication with this ``(user, password)``.
        mask: Called as ``mask(task_type, value)`` on every payload and result before it
            is shown; see :func:`mask_fields`.
        stale_after: Seconds without a heartbeat after which a worker shows as stale.

    Raises:
        ConfigError: Both ``token`` and ``basic_auth``, an empty secret, or a bad
            ``stale_after``.
    """
    if token is not None and basic_auth is not None:
        raise ConfigError("give token or basic_auth, not both")
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise ConfigError("token must be text of at least 8 characters")
    if basic_auth is not None and (
        not isinstance(basic_auth, tuple)
        or len(basic_auth) != 2
        or not all(basic_auth)
        or ":" in basic_auth[0]
    ):
        raise ConfigError("basic_auth must be a (user, password) pair, both non-empty, no ':' in the user")
    if not is_number(stale_after) or not stale_after > 0:
        raise ConfigError(f"stale_after must be a number of seconds above 0, got {stale_after!r}")
    if mask is not None and not callable(mask):
        raise ConfigError("mask must be a callable mask(task_type, value)")
    board = Dashboard(db, read_only, mask, float(stale_after))
    routes = [
        Route("/", board.overview, name="overview"),
        Route("/fragments/counts", board.overview_counts),
        Route("/api/overview.json", board.overview_data),
        Route("/types", board.types, name="types"),
        Route("/types/{action:str}", board.type_action, methods=["POST"]),
        Route("/tasks", board.tasks, name="tasks"),
        Route("/tasks/bulk/{action:str}", board.bulk_action, methods=["POST"]),
        Route("/tasks/{task_id:int}", board.task, name="task"),
        Route("/tasks/{task_id:int}/{action:str}", board.task_action, methods=["POST"]),
        Route("/workers", board.workers, name="workers"),
        Route("/schedules", board.schedules, name="schedules"),
        Route("/schedules/{action:str}", board.schedule_action, methods=["POST"]),
        Route("/metrics", board.metrics),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, token=token, basic_auth=basic_auth, read_only=read_only)],
    )
