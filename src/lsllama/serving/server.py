"""`lsllama serve`: a trained run behind HTTP (FastAPI + uvicorn), with concurrent requests batched.

A decoder forward pass over 32 short texts costs little more than over one, so requests are not run
one by one: each request's texts join one asyncio queue, and a single worker takes the first waiting
request, gathers whatever else arrives within `max_wait_ms` (up to `max_batch_size` texts), runs the
model once in its own thread (the event loop keeps accepting requests meanwhile) and hands every
request its own rows. One thread owns the model, so model calls never overlap. Predictions do not
depend on which requests share a batch (lsllama pads per length group and pools from the attention
mask), beyond float rounding.

Limits keep one client from starving the rest: the body size is checked from Content-Length, or while
a streamed body comes in (413); the number of texts and their length by the request schema (422).
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at runtime, and
# the request model is built inside create_app (its limits are settings), out of reach of string lookup.

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import lsllama
from lsllama.api import Classifier
from lsllama.errors import DataError, UsageError


@dataclass(frozen=True)
class ServeSettings:
    """Batching and limits. `max_batch_size=1` turns batching off (every request runs alone)."""

    max_batch_size: int = 32
    """Most texts in one model call (a single larger request still runs whole, in chunks of this size)."""
    max_wait_ms: float = 5.0
    """How long the first waiting request waits for others to share its batch."""
    max_texts: int = 64
    max_text_chars: int = 10_000
    max_body_bytes: int = 1 << 20

    def check(self) -> None:
        for name in ("max_batch_size", "max_texts", "max_text_chars", "max_body_bytes"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise UsageError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")


# ---- what the model answers, in the same records `lsllama predict` writes ----


class SequencePrediction(BaseModel):
    text: str
    label: str
    score: float
    """The probability of `label`: the name and value transformers' text-classification pipeline answers with,
    so an exported model's pipeline and lsllama give the same record."""
    probabilities: dict[str, float]


class MultiLabelPrediction(BaseModel):
    text: str
    labels: list[str]
    probabilities: dict[str, float]


class RegressionPrediction(BaseModel):
    text: str
    value: float


class EntityRecord(BaseModel):
    type: str
    start_word: int
    end_word: int
    text: str
    start_char: int
    end_char: int


class TokenPrediction(BaseModel):
    text: str
    entities: list[EntityRecord]


def predict_records(classifier: Classifier, texts: list[str], pairs: list[str] | None, batch_size: int) -> list[dict]:
    """One record per text; runs in the model thread."""
    if classifier.task == "token":
        entities = classifier.predict_entities(list(texts), batch_size)
        return [{"text": t, "entities": [asdict(e) for e in ents]} for t, ents in zip(texts, entities, strict=True)]
    return classifier.records(texts, pairs, batch_size)


# ---- batching ----


@dataclass
class Job:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future


@dataclass
class Batcher:
    """The queue and its one worker (see the module docstring)."""

    predict: Callable[[list[str], list[str] | None], list[dict]]
    max_batch_size: int
    max_wait_s: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsllama-model")
    )
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "texts": 0, "batches": 0, "largest_batch": 0})

    async def submit(self, texts: list[str], pairs: list[str] | None) -> list[dict]:
        job = Job(texts, pairs, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def run(self) -> None:
        waiting: Job | None = None  # took it from the queue, but it did not fit in the last batch
        while True:
            first = waiting or await self.queue.get()
            waiting = None
            jobs, size = [first], len(first.texts)
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while size < self.max_batch_size:
                if self.queue.empty():
                    timeout = deadline - asyncio.get_running_loop().time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self.queue.get(), timeout)
                    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                        break
                else:
                    job = self.queue.get_nowait()
                if size + len(job.texts) > self.max_batch_size:
                    waiting = job
                    break
                jobs.append(job)
                size += len(job.texts)
            await self._run_batch([j for j in jobs if not j.future.done()])  # done: cancelled with its request

    def fail_waiting(self, error: Exception) -> None:
        """Answer requests still queued when the worker stops, instead of leaving them hanging."""
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(error)

    async def _run_batch(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        pairs = [p for j in jobs for p in j.pairs] if jobs[0].pairs is not None else None
        loop = asyncio.get_running_loop()
        try:
            records = await loop.run_in_executor(self.executor, self.predict, texts, pairs)
        except Exception as exc:
            if len(jobs) > 1:  # one bad request must not fail the others: run each alone
                for job in jobs:
                    await self._run_batch([job])
                return
            if not jobs[0].future.done():
                jobs[0].future.set_exception(exc)
            return
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        self.stats["texts"] += len(texts)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(texts))
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(records[start : start + len(job.texts)])
            start += len(job.texts)


# ---- body size ----


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyLimit:
    """413 for a body over the limit: at once from Content-Length, else while a streamed body is read."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_bytes:  # the HTTP parser checked it is a number
            error = BodyTooLarge(self.max_bytes)
            await JSONResponse({"detail": error.detail}, error.status_code)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)  # FastAPI re-raises HTTPExceptions from body reading
            return message

        await self.app(scope, limited, send)


# ---- access log ----

ACCESS_LOG = logging.getLogger("lsllama.serving.access")
"""One line per request (client, method, path, status, milliseconds). The library only emits it; `lsllama
serve` gives the logger a handler, and an embedding application configures it as it likes."""


class AccessLog:
    """Logs every HTTP request once it is answered, whatever answered it (413s from BodyLimit included)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
            elapsed = (time.perf_counter() - start) * 1000
            ACCESS_LOG.info("%s %s %s %d %.1fms", client, scope["method"], scope["path"], status, elapsed)


# ---- the app ----


def validation_message(errors: Sequence[Any]) -> str:
    """FastAPI's 422 body lists every failed check with the offending input (a 10,000-character text twice,
    for a union type): one line instead, naming the field, without echoing the input."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "request body"
    message = f"{where}: {first['msg'].removeprefix('Value error, ')}"
    return message + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")


def request_model(settings: ServeSettings) -> type[BaseModel]:
    """The /predict body, with the settings' limits in its schema."""
    Text = Annotated[str, StringConstraints(min_length=1, max_length=settings.max_text_chars)]
    Texts = Annotated[list[Text], Field(min_length=1, max_length=settings.max_texts)]

    class PredictRequest(BaseModel):
        """`inputs`: one text or a list of texts (raw text for both tasks); `pairs` only for a run trained on
        text pairs. A single string is taken as a list of one."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": ["a gorgeous film"]}]})
        inputs: Texts
        pairs: Texts | None = None

        @field_validator("inputs", "pairs", mode="before")
        @classmethod
        def one_text_is_a_list_of_one(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

        @field_validator("inputs", "pairs")
        @classmethod
        def has_content(cls, value: list[str] | None) -> list[str] | None:
            if any(not text.strip() for text in value or []):
                raise ValueError("a text is empty or only whitespace")
            return value

    return PredictRequest


def response_model(classifier: Classifier) -> type[BaseModel]:
    Prediction = (
        TokenPrediction
        if classifier.task == "token"
        else {
            "single_label": SequencePrediction,
            "multi_label": MultiLabelPrediction,
            "regression": RegressionPrediction,
        }[classifier.problem]
    )

    class PredictResponse(BaseModel):
        """One prediction per input text, in input order (a list even for one text)."""

        predictions: list[Prediction]

    return PredictResponse


def batching_lifespan(classifier: Classifier, settings: ServeSettings) -> Callable:
    """Starts the batcher's worker with the app and stops it (answering whoever still waits) at shutdown."""

    def run_model(texts: list[str], pairs: list[str] | None) -> list[dict]:
        return predict_records(classifier, texts, pairs, settings.max_batch_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = app.state.batcher = Batcher(run_model, settings.max_batch_size, settings.max_wait_ms / 1000)
        worker = asyncio.create_task(batcher.run(), name="lsllama-batcher")
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            batcher.executor.shutdown(wait=True)
            batcher.fail_waiting(HTTPException(503, "the server is shutting down"))

    return lifespan


def create_app(classifier: Classifier, settings: ServeSettings | None = None) -> FastAPI:
    """POST /predict, GET /health, GET /metadata; OpenAPI at /docs, its assets served from the package
    (fastapi-offline), so the page works without internet. Start it with uvicorn."""
    settings = settings or ServeSettings()
    settings.check()
    names = classifier.labels.names
    app = FastAPIOffline(
        title="lsllama",
        version=lsllama.__version__,
        summary=f"{classifier.task}-task classifier: {', '.join(names[:10])}" + (" ..." if len(names) > 10 else ""),
        lifespan=batching_lifespan(classifier, settings),
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)  # added last: the outermost, so it sees every answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc.errors())}, 422)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    add_predict_route(app, classifier, settings)
    add_info_routes(app, classifier, settings)
    return app


def add_predict_route(app: FastAPI, classifier: Classifier, settings: ServeSettings) -> None:
    wants_pairs = classifier.task == "sequence" and bool(classifier.config.data.text_pair_column)
    PredictRequest, PredictResponse = request_model(settings), response_model(classifier)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> dict[str, Any]:
        """A label with every label's probability, a set of labels (multi-label) or a value (regression) for
        the sequence task, or entities with character offsets (token task): the records `lsllama predict` writes."""
        if wants_pairs != (body.pairs is not None):
            pair_column = classifier.config.data.text_pair_column
            raise HTTPException(
                422, f"this run was trained on text pairs ({pair_column!r}): send `pairs`" if wants_pairs
                else "this run takes no `pairs`"
            )  # fmt: skip
        if body.pairs is not None and len(body.pairs) != len(body.inputs):
            raise HTTPException(422, f"{len(body.inputs)} inputs but {len(body.pairs)} pairs")
        return {"predictions": await app.state.batcher.submit(body.inputs, body.pairs)}


def add_info_routes(app: FastAPI, classifier: Classifier, settings: ServeSettings) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and what the batcher has done so far (requests, texts, model calls, largest batch)."""
        batcher = app.state.batcher
        return {"status": "ok", "queued": batcher.queue.qsize(), **batcher.stats}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """What this server predicts and with which model and limits."""
        cfg = classifier.config
        return {
            "task": classifier.task,
            "problem": classifier.problem,
            "labels": classifier.labels.names,
            "base_model": cfg.model.name,
            "pooling": cfg.model.pooling if classifier.task == "sequence" else None,
            "bidirectional": cfg.model.bidirectional,
            "unmask_from_layer": cfg.model.unmask_from_layer,
            "max_length": cfg.data.max_length,
            "precision": cfg.model.precision,
            "text_pairs": classifier.task == "sequence" and bool(cfg.data.text_pair_column),
            "lsllama_version": lsllama.__version__,
            "settings": asdict(settings),
        }
