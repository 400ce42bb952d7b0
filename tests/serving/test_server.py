"""featmux serve: /predict parity with predict, 422s naming row and field, metadata, micro-batching
(counted forward passes) and a graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

import featmux as fm
from featmux.serving.server import ServerConfig, create_app


@pytest.fixture
def client(artefacts):
    with TestClient(create_app(fm.load(artefacts["fp32"]))) as c:
        yield c


def test_predict_matches_the_model(client, artefacts, rows, instances):
    response = client.post("/predict", json={"instances": instances(rows)})
    assert response.status_code == 200
    expected = fm.load(artefacts["fp32"]).predict(rows)
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=0, atol=1e-6)


def test_health_metadata_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["features"] == [
        {"name": "user", "type": "int"},
        {"name": "site", "type": "string"},
        {"name": "device", "type": "hex"},
        {"name": "tags", "type": "list[int]"},
        {"name": "price", "type": "float"},
    ]
    doc = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/metadata"} <= set(doc["paths"])


def _one(instance, **changes):
    instance[1] = {k: v for k, v in {**instance[1], **changes}.items() if v is not _DROP}
    return {"instances": instance}


_DROP = object()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "instance 1: unknown feature 'colour'"),
        ({"user": "seven"}, "instance 1: field 'user'"),
        ({"user": 1.5}, "instance 1: field 'user'"),
        ({"user": 1 << 64}, "instance 1: field 'user'"),
        ({"site": 3}, "instance 1: field 'site'"),
        ({"site": "\ud800"}, "instance 1: field 'site'"),
        ({"device": "xyz"}, "instance 1: field 'device'"),
        ({"tags": [1, "a"]}, "instance 1: field 'tags'"),
        ({"price": "cheap"}, "instance 1: field 'price'"),
        ({"site": _DROP}, "instance 1: field 'site': Field required"),
    ],
)
def test_bad_instances_are_422_naming_row_and_field(client, rows, changes, message, instances):
    body = json.dumps(_one(instances(rows.head(2)), **changes))  # ASCII: a lone surrogate is escaped
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["message"].startswith(message), response.json()


def test_bad_bodies_are_422(client, rows, instances):
    assert client.post("/predict", json={"instances": []}).status_code == 422
    assert client.post("/predict", json={"rows": instances(rows.head(1))}).status_code == 422
    assert client.post("/predict", content=b"{not json").status_code == 422
    infinite = b'{"instances": [{"user": 1, "site": "a", "device": "f", "tags": [], "price": Infinity}]}'
    assert (
        client.post("/predict", content=infinite, headers={"content-type": "application/json"}).status_code
        == 422
    )


def test_nulls_are_missing_values(client, artefacts, rows):
    instance = {"user": None, "site": None, "device": None, "tags": None, "price": None}
    response = client.post("/predict", json={"instances": [instance]})
    assert response.status_code == 200
    blank = rows.head(1).with_columns(user=None, site=None, device=None, tags=None, price=None)
    expected = fm.load(artefacts["fp32"]).predict(blank)
    assert math.isclose(response.json()["predictions"][0], float(expected[0]), abs_tol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_requests_share_forward_passes(artefacts, rows, instances):
    predictor = fm.load(artefacts["fp32"])
    app = create_app(predictor, ServerConfig(max_batch=1024, max_wait_ms=200))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    bodies = [{"instances": [one]} for one in instances(rows.head(32))]

    async def fire() -> list[float]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(100):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            before = predictor.forwards
            answers = await asyncio.gather(*(http.post("/predict", json=b) for b in bodies))
            assert all(a.status_code == 200 for a in answers)
            return predictor.forwards - before, [a.json()["predictions"][0] for a in answers]

    try:
        forwards, scores = asyncio.run(fire())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert forwards <= 4, f"32 concurrent one-row requests took {forwards} forward passes"
    np.testing.assert_allclose(scores, predictor.predict(rows.head(32)), rtol=0, atol=1e-6)


def test_sigterm_shuts_down_gracefully(artefacts, rows, instances):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "featmux.cli.main", "serve", str(artefacts["fp32"]), "--port", str(port)]
    command += ["--backend", "eager"]  # loads in 0.2 s, not the program's ~10 s: this test is about shutdown
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        response = httpx.post(f"{url}/predict", json={"instances": instances(rows.head(3))})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        output = process.stdout.read() if process.stdout else ""
        # uvicorn re-raises the signal once shut down: the exit is SIGTERM's, after the drained queue
        assert code in (0, -signal.SIGTERM), output
        assert "stopped: queue drained after 1 forward passes" in output, output
    finally:
        if process.poll() is None:
            process.kill()
