"""The black box over HTTP (DESIGN.md sections 4 and 5), resilient and budget-aware.

`BlackBoxClient.recommend_many` asks for the top-k of many histories and returns one `Outcome`
per history, in order: answered (the items) or failed (why). Nothing is dropped and nothing is
stored that the black box did not say: a body that is not valid JSON, has the wrong shape or
the wrong number of answers is retried, never patched up.

- Batches: `POST /v1/recommend/batch` in chunks of `batch_size` when the black box has it. The
  first batch request is the probe: a 404/405 switches the client to `POST /v1/recommend`, one
  history per request. A batch refused as a whole for its content (413, 422) is split in two
  until the bad histories stand alone, so one unknown item fails one history, not 256.
- Retries, with exponential backoff and full jitter: 5xx, timeouts, connection errors and
  malformed bodies, up to `max_retries`. A 429 pauses every request of this client until
  `Retry-After` has passed (rate limits are per key, so the whole client is throttled) and
  counts against `max_rate_limited`, not `max_retries`.
- Final at once: 401 (bad key) and 403 (quota spent) stop the client, so every later request
  fails without being sent; 422 and other 4xx fail that request only. So does a destination
  the policy refuses (`extractor.destinations`): nothing is sent, now or later.
- An error answer's reason is its status and a fixed description, never the body's text: the
  black box is whatever host the URL names, and what it says must not reach the caller.
- Budget: `BudgetHook.on_send` is asked before every request, retries included. A refused
  batch is split in halves so what is left of the budget is spent; histories still refused
  fail as "budget exhausted" (the caller may ask them again later). `on_result` follows every
  allowed `on_send` and says whether the attempt was paid. An exception from a hook cancels
  the call's other requests and propagates.
- `model_tag` is the last `X-Model-Version` seen; each `Outcome` carries the tag of the response
  that answered it, for the cache key.

HTTP goes through `extractor.http`, a small keep-alive HTTP/1.1 client, not httpx.AsyncClient
as DESIGN.md section 5 says: httpx spent 25 to 60 times its client CPU per request, which left
the single endpoint at a quarter of the teacher's capacity (the measurements are in that module
and in docs/benchmarks.md, "Extraction throughput").

The API key is sent as the API profile says (`extractor.auth`: recmimic's contract takes it in
`Authorization: Bearer`), signed per request where the profile signs; it is kept out of reprs
and logs. A profile in session mode writes each history as events under a fresh id before it
is asked (`_open_session`), and a call may go to another origin than `base_url`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Protocol

import orjson

from extractor.auth import KeyAuth, key_auth
from extractor.destinations import DestinationPolicy, DestinationRefused
from extractor.errors import BlackBoxError
from extractor.http import HTTPClient, Response, TransportError
from extractor.pacing import Pacer
from extractor.profiles import ApiProfile
from extractor.tasks import gather_or_cancel
from extractor.wire import ProfileWire, RecmimicWire, Wire, WireRequest, mismatch

log = logging.getLogger("extractor.client")

BUDGET_REFUSED = "budget exhausted"  # the reason given to histories the budget hook refused


@dataclass(frozen=True)
class ClientConfig:
    """Where the black box is and how hard to try; every limit is per client."""

    base_url: str
    api_key: str = field(repr=False)
    max_concurrency: int = 8  # requests in flight (and open connections)
    timeout_s: float = 30.0  # from sending a request to its whole answer
    connect_timeout_s: float = 5.0
    max_retries: int = 5  # retries after 5xx, timeouts, connection errors, malformed bodies
    max_rate_limited: int = 100  # 429 answers tolerated per request before it fails
    backoff_base_s: float = 0.1  # first backoff ceiling; doubles per retry
    backoff_max_s: float = 10.0
    max_retry_after_s: float = 300.0  # a longer Retry-After is cut to this
    batch_size: int = 256  # histories per batch request (the contract allows up to 256)
    batch: bool | None = None  # None: probe the batch endpoint; False: single requests only
    items_page_size: int = 1000
    jitter_seed: int | None = None
    destinations: DestinationPolicy | None = None  # None: the one in force (`applied`)
    profile: ApiProfile | None = None  # None: recmimic's own contract
    rate: float | None = None  # requests per second at most (None: the profile's, or found)

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.batch_size < 1 or self.items_page_size < 1:
            raise ValueError("max_concurrency, batch_size and items_page_size must be >= 1")
        if self.max_retries < 0 or self.max_rate_limited < 0:
            raise ValueError("max_retries and max_rate_limited must be >= 0")


@dataclass(frozen=True)
class Outcome:
    """One history's result: `items` (best first) when answered, else `reason`."""

    items: Sequence[str] | None = None
    reason: str | None = None
    model_tag: str | None = None
    scores: Sequence[float] | None = None  # when the API gives them and the profile names them

    @property
    def ok(self) -> bool:
        return self.items is not None


_UNASKED = Outcome(reason="not asked")  # a placeholder, replaced before it is returned


class BudgetHook(Protocol):
    """What the client tells the caller's budget, around every request it sends.

    Coroutines, so a budget can make a reservation durable before granting it. `on_send` is
    asked before each attempt, retries included (a retried 504 may be paid twice); every
    attempt it allows is followed by exactly one `on_result`, even when cancelled.
    """

    async def on_send(self, n_histories: int) -> bool:
        """False refuses the request (budget exhausted); an exception aborts the whole call."""
        ...

    async def on_result(self, n_histories: int, charged: bool | None, answered: int) -> None:
        """`charged`: True paid (2xx, 504, truncated body), False not paid (refused, 503,
        never sent), None unknown (e.g. read timeout). `answered`: histories that got a valid
        answer (n_histories or 0); paid but unanswered ones were lost on the way."""
        ...


class NoBudget:
    """The default hook: no limit on the client's side (the black box's quota still holds)."""

    async def on_send(self, n_histories: int) -> bool:
        return True

    async def on_result(self, n_histories: int, charged: bool | None, answered: int) -> None:
        return None


@dataclass(frozen=True)
class _Origin:
    http: HTTPClient
    auth: KeyAuth


class _NoBatchRoute(Exception):
    """The black box answered 404/405 on the batch route: ask one history per request."""


@dataclass(frozen=True)
class _Reply:
    """An HTTP response and, for a 200, its parsed body (None: it broke the contract)."""

    response: Response
    parsed: Any | None


@dataclass(frozen=True)
class _NoResponse:
    """Why an attempt got no HTTP response: the client is stopped, the budget refused it, or
    the transport failed (the only case worth a retry)."""

    reason: str
    why: Literal["stopped", "budget", "transport"]


class _SingleCall:
    """One `_ask_singly` call: its outcomes so far, and the future its caller awaits."""

    __slots__ = ("outcomes", "left", "done")

    def __init__(self, outcomes: list[Outcome], left: int, loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes = outcomes
        self.left = left
        self.done: asyncio.Future[list[Outcome]] = loop.create_future()

    def answer(self, i: int, outcome: Outcome) -> None:
        if self.done.done():
            return
        self.outcomes[i] = outcome
        self.left -= 1
        if self.left == 0:
            self.done.set_result(self.outcomes)


class BlackBoxClient:
    """Pooled, bounded, retrying HTTP client of one black box; use as `async with`."""

    def __init__(self, config: ClientConfig, budget: BudgetHook | None = None) -> None:
        self.config = config
        self.budget: BudgetHook = budget if budget is not None else NoBudget()
        self.model_tag: str | None = None
        self.stopped: str | None = None  # why the black box refused us for good (401, 403)
        self._wire: Wire = (
            RecmimicWire(config.batch, config.batch_size)
            if config.profile is None
            else ProfileWire(config.profile, config.batch_size)
        )
        # session mode: each probe is written as events under a fresh id before it is asked
        wire = self._wire
        self._sessions = wire if isinstance(wire, ProfileWire) and wire.sessions else None
        self._batch = self._wire.batch  # None until the batch route is probed
        # A profile is checked by its first answer, asked for one history alone: until one
        # parses, an answer that does not is final (a wrong profile would pay for every retry).
        self._checked = config.profile is None
        self._probe = asyncio.Lock()
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._resume_at = 0.0  # loop time before which no request is sent (after a 429)
        known = config.profile.limits.rate if config.profile is not None else None
        self._pacer = Pacer(config.rate if config.rate is not None else known)
        self._random = random.Random(config.jitter_seed)
        self._queue: deque[tuple[_SingleCall, int, list[str], int]] = deque()  # (call, i, h, k)
        self._workers: set[asyncio.Task[None]] = set()
        self._origins: dict[str, _Origin] = {}
        self._origin(config.base_url)  # a URL that cannot be used fails here

    def _origin(self, base_url: str | None) -> _Origin:
        """The connections and credentials of one origin: the black box's URL, or another a
        profile's call names (Personalize writes events on one host and answers on another);
        each gets the key as the profile says, signed for its own host."""
        url = base_url or self.config.base_url
        origin = self._origins.get(url)
        if origin is None:
            profile = self.config.profile
            auth = key_auth(profile.auth if profile else None, self.config.api_key, url)
            http = HTTPClient(
                url,
                headers={**(profile.headers if profile else {}), **auth.headers},
                timeout_s=self.config.timeout_s,
                connect_timeout_s=self.config.connect_timeout_s,
                policy=self.config.destinations,
            )
            origin = self._origins[url] = _Origin(http, auth)
        return origin

    async def __aenter__(self) -> BlackBoxClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for origin in self._origins.values():
            await origin.http.aclose()

    @property
    def uses_batch(self) -> bool | None:
        """Whether the batch endpoint is in use (None: not known yet)."""
        return self._batch

    async def recommend_many(self, histories: Sequence[Sequence[str]], k: int) -> list[Outcome]:
        """The top-k of every history, one `Outcome` each, in the order given."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        outcomes: list[Outcome] = [Outcome(reason="empty history")] * len(histories)
        todo = [i for i, history in enumerate(histories) if len(history) > 0]
        # Batches of `batch_size`, or, once single requests are known to be needed, one queue.
        size = self._wire.batch_size if self._batch is not False else max(len(todo), 1)
        chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
        answered = await gather_or_cancel(
            self._ask_chunk([_as_list(histories[i]) for i in chunk], k) for chunk in chunks
        )
        for chunk, results in zip(chunks, answered, strict=True):
            for i, outcome in zip(chunk, results, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any | None:
        """GET a JSON document (not budgeted); None when the black box has no such route.

        Retries like recommendations do; raises `BlackBoxError` when refused or out of retries.
        """
        return await self._call(WireRequest("GET", path, None, params), _json_body)

    async def _call(
        self,
        request: WireRequest,
        parse: Callable[[Response], Any | None],
        retries: int | None = None,
    ) -> Any | None:
        """Send an unbudgeted request until a 2xx (what `parse` makes of it), 404/405 (None)
        or a refusal (`BlackBoxError`); `retries` after faults (default `max_retries`)."""
        retries = self.config.max_retries if retries is None else retries
        where = f"{request.method} {request.path}"
        faults = limited = 0
        while True:
            reply = await self._attempt(request, 0, parse)
            if isinstance(reply, _NoResponse):
                if reply.why != "transport":
                    raise BlackBoxError(reply.reason)
                reason = reply.reason
            else:
                response, status = reply.response, reply.response.status_code
                if 200 <= status < 300:
                    if reply.parsed is not None:
                        return reply.parsed
                    reason = "malformed body (not JSON)"
                elif status == 429:
                    limited += 1
                    if limited > self.config.max_rate_limited:
                        raise BlackBoxError(_describe(response), status)
                    self._pacer.refused()
                    self._hold(self._pause(response, limited))
                    continue
                elif status in (404, 405):
                    return None
                elif status < 500:
                    if status in (401, 403):
                        self.stopped = _describe(response)
                    raise BlackBoxError(_describe(response), status)
                else:
                    reason = _describe(response)
            faults += 1
            if faults > retries:
                raise BlackBoxError(f"{where}: {reason} (after {faults} attempts)")
            await asyncio.sleep(self._backoff(faults))

    async def _open_session(self, history: list[str]) -> str | list[Outcome]:
        """A fresh session holding `history`'s events, or the history's failed outcome.

        A write that fails midway is never retried under the same id: the events it may have
        stored would stand twice in the session. The whole session is written again under a
        new one, up to `max_retries` times; a refusal (4xx) is final for this history.
        """
        assert self._sessions is not None
        for attempt in range(self.config.max_retries + 1):
            session_id = self._sessions.new_session()
            try:
                for write in self._sessions.writes(history, session_id):
                    if await self._call(write, _accepted, retries=0) is None:
                        return _failed(1, f"{write.method} {write.path}: no such route (404)")
                return session_id
            except BlackBoxError as exc:
                if self.stopped is not None:  # the key was refused, now or by another call
                    return _failed(1, self.stopped)
                if exc.status is not None:  # refused: another session would be refused too
                    return _failed(1, f"writing the session: {exc}")
                reason = str(exc)
            await asyncio.sleep(self._backoff(attempt + 1))
        return _failed(1, f"{reason}; writing the session failed {attempt + 1} times")

    async def _close_session(self, session_id: str) -> None:
        """The profile's cleanup call, once; a failure leaves a session behind, nothing more."""
        assert self._sessions is not None
        cleanup = self._sessions.cleanup(session_id)
        if cleanup is None:
            return
        try:
            await self._call(cleanup, _accepted, retries=0)
        except BlackBoxError as exc:
            log.debug("cleanup of a session failed: %s", exc)

    async def _ask_chunk(self, chunk: list[list[str]], k: int) -> list[Outcome]:
        if not self._checked:
            first = None
            async with self._probe:
                if not self._checked:  # one paid answer says whether the profile fits
                    first = await self._request(chunk[:1], k, batch=bool(self._batch))
            if first is not None:  # the rest, once the lock is free (it is not reentrant)
                return first + (await self._ask_chunk(chunk[1:], k) if chunk[1:] else [])
        try:
            if self._batch is None:
                async with self._probe:  # one chunk at a time until the batch route is known
                    if self._batch is None:
                        return await self._request(chunk, k, batch=True)
            if self._batch:
                return await self._request(chunk, k, batch=True)
        except _NoBatchRoute:
            pass
        return await self._ask_singly(chunk, k)

    async def _ask_singly(self, chunk: list[list[str]], k: int) -> list[Outcome]:
        """One request per history, sent by the client's shared single-request workers.

        At most `max_concurrency` workers live, however many calls are waiting, and each takes
        the next queued history as soon as its last one is answered: a task per history (or per
        call and slot) cost more client CPU than the requests themselves. If this call is
        cancelled, or one of its requests raises (a budget hook), its queued histories are
        skipped; requests already in flight finish, and their outcomes are dropped.
        """
        if not chunk:
            return []
        call = _SingleCall([_UNASKED] * len(chunk), len(chunk), asyncio.get_running_loop())
        self._queue.extend((call, i, history, k) for i, history in enumerate(chunk))
        wanted = min(self.config.max_concurrency, len(self._queue))
        for _ in range(wanted - len(self._workers)):
            worker = asyncio.ensure_future(self._single_worker())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await call.done

    async def _single_worker(self) -> None:
        while self._queue:
            call, i, history, k = self._queue.popleft()
            if call.done.done():  # its caller was cancelled or has failed
                continue
            try:
                outcome = (await self._request([history], k, batch=False))[0]
            except Exception as exc:
                if not call.done.done():
                    call.done.set_exception(exc)
                continue
            except BaseException:  # this worker is cancelled (the client closes)
                call.done.cancel()
                raise
            call.answer(i, outcome)

    async def _request(self, histories: list[list[str]], k: int, batch: bool) -> list[Outcome]:
        """Ask until answered or final; raises `_NoBatchRoute` when the batch route is missing."""
        session_id = None
        if self._sessions is not None:
            opened = await self._open_session(histories[0])
            if not isinstance(opened, str):
                return opened
            session_id = opened
            try:
                return await self._ask(histories, k, batch, session_id)
            finally:
                await self._close_session(session_id)
        return await self._ask(histories, k, batch, session_id)

    async def _ask(
        self, histories: list[list[str]], k: int, batch: bool, session_id: str | None
    ) -> list[Outcome]:
        n = len(histories)
        request = self._wire.request(histories, k, batch, session_id)
        path = request.path
        faults = limited = 0
        while True:
            reply = await self._attempt(request, n, lambda r: self._wire.parse(r, n, k, batch))
            if isinstance(reply, _NoResponse):
                if reply.why == "budget" and n > 1:  # what is left may still cover a part
                    return await self._split(histories, k, batch)
                if reply.why != "transport":
                    return _failed(n, reply.reason)
                reason = reply.reason
            else:
                response, status = reply.response, reply.response.status_code
                if batch and self._batch is None and status < 500 and status not in (404, 405):
                    self._batch = True  # the route exists: it answered or judged the request
                if 200 <= status < 300:
                    if reply.parsed is not None:
                        self._checked = True
                        self._pacer.answered()
                        tag = reply.parsed.model_tag
                        self._learn_tag(tag)
                        answers, scores = reply.parsed.answers, reply.parsed.scores
                        return [
                            Outcome(items, model_tag=tag, scores=scores[i] if scores else None)
                            for i, items in enumerate(answers)
                        ]
                    if not self._checked and self.config.profile is not None:
                        why = mismatch(self.config.profile, response, n, k)
                        self.stopped = f"the answer does not fit the API profile: {why}"
                        log.warning("%s", self.stopped)
                        return _failed(n, self.stopped)
                    reason = "malformed body"
                elif status == 429:
                    limited += 1
                    if limited > self.config.max_rate_limited:
                        return _failed(n, f"{_describe(response)} ({limited} times)")
                    self._pacer.refused()
                    self._hold(self._pause(response, limited))
                    continue
                elif batch and self._wire.batch is None and status in (404, 405):
                    log.info("no batch endpoint (%d); asking one history per request", status)
                    self._batch = False
                    raise _NoBatchRoute
                elif status in (401, 403):
                    self.stopped = _describe(response)
                    log.warning("the black box refused this key for good: %s", self.stopped)
                    return _failed(n, self.stopped)
                elif batch and n > 1 and status in (413, 422):
                    return await self._split(histories, k, batch)
                elif status < 500:
                    return _failed(n, _describe(response))
                else:
                    reason = _describe(response)
            faults += 1
            if faults > self.config.max_retries:
                return _failed(n, f"{reason} (after {faults} attempts)")
            log.debug("%s failed (%s); retry %d", path, reason, faults)
            await asyncio.sleep(self._backoff(faults))

    async def _split(self, histories: list[list[str]], k: int, batch: bool) -> list[Outcome]:
        """Ask the two halves of a refused batch apart, to isolate the histories at fault.

        Goes straight to `_request` (not `_ask_chunk`): a split can happen while the batch
        route is being probed under the probe lock, which `_ask_chunk` would take again.
        """
        half = len(histories) // 2
        left, right = await gather_or_cancel(
            [self._request(histories[:half], k, batch), self._request(histories[half:], k, batch)]
        )
        return left + right

    async def _attempt(
        self, request: WireRequest, n: int, parse: Callable[[Response], Any | None]
    ) -> _Reply | _NoResponse:
        """One request: wait for a slot and any rate-limit pause, check the client is not
        stopped, consult the budget, add the key or sign, send, and `parse` a 2xx body (None:
        malformed).

        `n` histories are at stake (0: not a budgeted request, and no hooks are called).
        """
        async with self._slots:
            await self._wait_rate_limit()
            await self._pacer.wait()
            if self.stopped is not None:  # decided while this request waited
                return _NoResponse(self.stopped, "stopped")
            if n and not await self.budget.on_send(n):
                return _NoResponse(BUDGET_REFUSED, "budget")
            charged: bool | None = None
            parsed = None
            method, path, body = request.method, request.path, request.body
            params, headers = request.params, request.headers
            origin = self._origin(request.base_url)
            try:
                if origin.auth.params:
                    params = {**(params or {}), **origin.auth.params}
                if origin.auth.signer is not None:  # signed now: signatures hold a timestamp
                    signed = origin.auth.signer.sign(method, path, params, body)
                    params = signed.params
                    headers = {**(headers or {}), **(signed.headers or {})}
                response = await origin.http.request(method, path, body, params, headers)
                charged = charged_for(response.status_code)
                if 200 <= response.status_code < 300:
                    parsed = parse(response)
            except TransportError as exc:
                charged = None if exc.sent else False  # never sent: cannot have been charged
                return _NoResponse(f"{type(exc).__name__} on {method} {path}", "transport")
            except DestinationRefused as exc:  # decided before connecting; final
                charged = False
                self.stopped = f"destination refused: {exc}"
                log.warning("%s", self.stopped)
                return _NoResponse(self.stopped, "stopped")
            finally:
                if n:
                    await self.budget.on_result(n, charged, n if parsed is not None else 0)
        header = self._wire.version_header
        self._learn_tag(response.headers.get(header.lower()) if header else None)
        return _Reply(response, parsed)

    def _learn_tag(self, tag: str | None) -> None:
        if tag is None or tag == self.model_tag:
            return
        if self.model_tag is not None:
            log.warning("the black box's model changed: %s -> %s", self.model_tag, tag)
        self.model_tag = tag

    def _hold(self, seconds: float) -> None:
        """Pause every request of this client for `seconds` from now (a 429 was answered)."""
        loop = asyncio.get_running_loop()
        self._resume_at = max(self._resume_at, loop.time() + seconds)

    async def _wait_rate_limit(self) -> None:
        if not self._resume_at:  # never rate limited: no clock to read
            return
        loop = asyncio.get_running_loop()
        while (delay := self._resume_at - loop.time()) > 0:
            await asyncio.sleep(delay)

    def _pause(self, response: Response, limited: int) -> float:
        """How long to pause after the `limited`-th 429: `Retry-After`, else a backoff."""
        retry_after = _retry_after(response, self.config.max_retry_after_s)
        return retry_after if retry_after is not None else self._backoff(limited)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(attempt-1))]."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        return self._random.uniform(0, ceiling)


def _as_list(history: Sequence[str]) -> list[str]:
    """A history as the list the request body encodes. A list is sent as it is (its ids are
    strings by contract: the cache keys refuse others); copying every id of every history
    with `str` took 4% of the client's CPU on the single endpoint."""
    return history if type(history) is list else list(map(str, history))


def _json_body(response: Response) -> Any | None:
    try:
        return orjson.loads(response.content)
    except ValueError:
        return None


def _accepted(response: Response) -> bool:
    """A write or cleanup call's 2xx: accepted, whatever its body says."""
    return True


def charged_for(status: int) -> bool | None:
    """Whether an answer with this status was paid for: answers were produced for 2xx and 504
    (DESIGN.md section 4: lost answers are billed); refusals and 503 cost nothing; None for
    other 5xx, which may follow a charge (the budget keeps those units spent)."""
    if 200 <= status < 300 or status == 504:
        return True
    if 400 <= status < 500 or status == 503:
        return False
    return None


def _retry_after(response: Response, cap: float) -> float | None:
    """Seconds from `Retry-After` (delta-seconds or an HTTP date), capped; None when absent."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), cap)


# Fixed words for the statuses the contract gives a meaning; others get the standard phrase.
_MEANINGS = {
    401: "the black box refused the API key",
    403: "the black box refused the request (quota spent or key not allowed)",
    413: "the black box found the request too large",
    422: "the black box refused the request's content",
    429: "rate limited",
}


def _describe(response: Response) -> str:
    """`<status>: <fixed description>` for an error answer.

    Never the body's `detail` nor the reason phrase: both are whatever the host at the URL
    chose to say, and the reason ends up in the job's record, shown to whoever posted the URL.
    A URL aimed at some internal service must not become a way to read what it answers.
    """
    status = response.status_code
    meaning = _MEANINGS.get(status)
    if meaning is None:
        try:
            meaning = HTTPStatus(status).phrase
        except ValueError:
            meaning = "error answer"
    return f"{status}: {meaning}"


def _failed(n: int, reason: str) -> list[Outcome]:
    return [Outcome(reason=reason)] * n
