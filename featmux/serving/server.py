"""The HTTP JSON scorer: `featmux serve ARTEFACT --host 127.0.0.1 --port N` (FastAPI + uvicorn).

    POST /predict   {"instances": [{"feature": value, ...}, ...]}  ->  {"predictions": [p, ...]}
    GET  /health    {"status": "ok"}
    GET  /metadata  {"features": [{"name": ..., "type": ...}, ...], ...}   (inputs in schema order)
    GET  /openapi.json, /docs

The request shape is TF Serving's and KServe v1's. Every instance must give every feature (null means
a missing value, as an empty field in training data); an unknown feature, a wrong type or a missing field
is a 422 whose `message` names the instance (row, 0-based) and the field. Values are checked against
the schema before any work: ints within int64, hex ids of at most 16 digits, finite numbers, text that
is valid UTF-8.

Micro-batching: requests go to an asyncio queue; one worker takes what is queued (up to `max_batch`
rows, waiting at most `max_wait_ms` for more after the first, default 0) and scores it in one forward
pass on a worker thread, so the event loop keeps accepting requests meanwhile and they queue up for
the next pass. On shutdown (SIGINT/SIGTERM)
uvicorn stops accepting, finishes the requests in flight, and the queue is drained before exit.
"""

import asyncio
import gc
import itertools
import json
import logging
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)
from typing_extensions import TypedDict

from featmux.data.errors import DataError
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.serving.predictor import Predictor

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
log = logging.getLogger("featmux.serve")
MAX_INSTANCES = 10_000  # per request: bounds the memory one request can take


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates ("\ud800") are valid JSON but not text
        raise ValueError("not valid UTF-8 text") from err
    return value


Text = Annotated[StrictStr, AfterValidator(_utf8)]
Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
Hex = Annotated[StrictStr, Field(pattern=r"^\s*[0-9a-fA-F]{1,16}\s*$")]
Number = Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]


def _value_type(feature: CategoricalFeature) -> Any:
    item = {ValueEncoding.INT: Int64, ValueEncoding.STRING: Text, ValueEncoding.HEX: Hex}[feature.encoding]
    return (list[item] if feature.multivalent else item) | None


def _polars_type(feature: CategoricalFeature) -> pl.DataType:
    item = pl.Int64 if feature.encoding is ValueEncoding.INT else pl.String
    return pl.List(item) if feature.multivalent else item


@dataclass(frozen=True)
class ServerConfig:
    """Micro-batching of the server.

    Args:
        max_batch: rows of one forward pass at most (a larger request is one pass of its own).
        max_wait_ms: after the first queued request, wait at most this long for more. The default 0 adds
            no latency and still batches under load: what queues while a forward pass runs is the next
            batch (a wait of a few ms cost more than it saved on a loaded 2-core machine).

    Example:
        >>> ServerConfig(max_batch=4096, max_wait_ms=0.0)
    """

    max_batch: int = 4096
    max_wait_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not (self.max_wait_ms >= 0 and math.isfinite(self.max_wait_ms)):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {self.max_wait_ms}")


class MicroBatcher:
    """Scores the instances of concurrent requests together: an asyncio queue, one worker, one thread.

    Args:
        predictor: the model.
        config: batch size and wait.
        columns: the polars type of each instance field (the frame of a batch is built in one call).

    Example:
        >>> batcher = MicroBatcher(predictor, ServerConfig(), {"user": pl.Int64, "site": pl.String})
        >>> await batcher.start(); scores = await batcher.submit([{"user": 3, "site": "a"}])
    """

    def __init__(self, predictor: Predictor, config: ServerConfig, columns: dict[str, pl.DataType]) -> None:
        self.predictor = predictor
        self.config = config
        self.columns = columns
        self._queue: asyncio.Queue[tuple[list[dict], asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featmux-forward")
        self.batches = 0  # forward passes run by the worker

    async def start(self) -> None:
        """Start the worker (on the running event loop)."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Score what is still queued, then stop the worker and its thread."""
        if self._queue is not None and self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, instances: list[dict]) -> np.ndarray:
        """The probabilities of validated instances (field -> value), scored with whatever else is queued."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((instances, future))
        return await future

    async def _collect(self) -> list[tuple[list[dict], asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        rows = len(batch[0][0])
        deadline = asyncio.get_running_loop().time() + self.config.max_wait_ms / 1000
        while rows < self.config.max_batch:
            if self._queue.empty():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if rows + len(item[0]) > self.config.max_batch:
                self._queue.put_nowait(item)  # next batch (goes to the back: its order does not matter)
                self._queue.task_done()
                break
            batch.append(item)
            rows += len(item[0])
        return batch

    def _score(self, requests: list[list[dict]]) -> list[np.ndarray | Exception]:
        """One forward pass for all requests; if a request's data fails, the others are scored apart."""
        rows = requests[0] if len(requests) == 1 else list(itertools.chain.from_iterable(requests))
        try:
            scores = self.predictor.predict(pl.from_dicts(rows, schema=self.columns))
        except (DataError, ValueError) as err:
            if len(requests) == 1:
                return [err]
            return [self._score([r])[0] for r in requests]
        bounds = np.cumsum([0] + [len(r) for r in requests])
        return [scores[lo:hi] for lo, hi in itertools.pairwise(bounds)]

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            try:
                results = await loop.run_in_executor(self._executor, self._score, [f for f, _ in batch])
            except Exception as err:  # an unexpected failure answers every waiting request
                results = [err] * len(batch)
            self.batches += 1
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                self._queue.task_done()


def _message(errors: list[dict[str, Any]]) -> str:
    """The first validation error as `instance 3: field 'user': what is wrong`."""
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    text = first.get("msg", "invalid")
    if len(loc) >= 3 and loc[0] == "instances":
        unknown = first.get("type") == "extra_forbidden"
        field = f"unknown feature {loc[2]!r}" if unknown else f"field {loc[2]!r}"
        return f"instance {loc[1]}: {field}: {text}"
    return f"{'.'.join(loc) or 'body'}: {text}"


def create_app(predictor: Predictor, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application scoring with `predictor`.

    Args:
        predictor: the model (`featmux.load`).
        config: micro-batching (default `ServerConfig()`).

    Returns:
        The app; `app.state.batcher` is its `MicroBatcher`.
    """
    config = config or ServerConfig()
    schema = predictor.schema
    fields: dict[str, Any] = {f.name: _value_type(f) for f in schema.categorical}
    fields |= {f.name: Number | None for f in schema.numeric}
    instance = TypedDict("Instance", fields)  # type: ignore[misc]  # required keys, checked in Rust
    instance.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    request_model = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        instances=(Annotated[list[instance], Field(min_length=1, max_length=MAX_INSTANCES)], ...),
    )
    polars_schema = {f.name: _polars_type(f) for f in schema.categorical}
    polars_schema |= {f.name: pl.Float64 for f in schema.numeric}
    batcher = MicroBatcher(predictor, config, polars_schema)

    class Predictions(BaseModel):
        predictions: list[float]

    class Feature(BaseModel):
        name: str
        type: str

    class Metadata(BaseModel):
        features: list[Feature]
        label: str
        backend: str
        source: str
        max_batch: int
        max_wait_ms: float

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        # the model, torch and the app are long-lived: keep the collector from rescanning them. Without
        # this, a full collection every ~1,000 requests stalled every request for ~0.8 s (measured).
        gc.collect()
        gc.freeze()
        log.info("ready: %s (%s)", predictor.source, predictor.backend.value)
        yield
        await batcher.stop()
        log.info("stopped: queue drained after %d forward passes", batcher.batches)

    app = FastAPI(title="featmux scorer", version="1", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in err.errors()]
        return JSONResponse({"message": _message(errors), "detail": errors[:20]}, status_code=422)

    async def predict(body: request_model) -> Response:  # type: ignore[valid-type]
        try:
            scores = await batcher.submit(body.instances)  # type: ignore[attr-defined]
        except (DataError, ValueError) as err:  # checked values that still do not convert (none known)
            return JSONResponse({"message": str(err)}, status_code=422)
        # the response is built here (not by FastAPI from `Predictions`): one dumps, no validation
        return Response(json.dumps({"predictions": scores.tolist()}), media_type="application/json")

    predict.__annotations__["body"] = request_model
    app.post("/predict", response_model=Predictions)(predict)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata", response_model=Metadata)
    async def metadata() -> Metadata:
        return Metadata(
            features=[Feature(**f) for f in predictor.features],
            label=schema.label,
            backend=predictor.backend.value,
            source=str(predictor.source),
            max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms,
        )

    return app
