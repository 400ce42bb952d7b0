"""Bounded loopback load test of `featmux serve` (127.0.0.1 only; requests and time capped per cell).

Starts `featmux serve ARTEFACT` on a free local port, then for each concurrency C and request size R runs
C clients that each send requests back to back (each request R real rows of DATA as instances), until
the cell's request cap or time cap is reached. Latency is measured at the client, so it includes JSON
encoding, HTTP, validation, fingerprinting, the forward pass and the answer. Clients and server share
the machine's cores.

    python benchmarks/serving/loadtest.py ARTEFACT --data frappe.test.libfm --dataset frappe \
        --out benchmarks/results/serving/load_fp32.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from featmux.data.sources import open_source


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instances(data: Path, dataset: str, rows: int) -> list[dict]:
    source = open_source(dataset, data, fractions=(1.0, 0.0, 0.0))
    frame = next(source.split("train", chunk_rows=rows)).drop(source.schema.label)
    return frame.to_dicts()


class Connection:
    """One keep-alive HTTP/1.1 connection with a minimal client: a Python HTTP client (httpx) costs more
    CPU per request than the server's own work, and here clients and server share the cores."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def cell(
    port: int, pool: list[dict], clients: int, size: int, max_requests: int, max_seconds: float
) -> dict:
    bodies = [
        json.dumps({"instances": pool[i : i + size]}).encode() for i in range(0, len(pool) - size, size)
    ]
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + max_seconds

    async def client(k: int, connection: Connection) -> None:
        nonlocal sent, errors
        try:
            while sent < max_requests and time.perf_counter() < stop_at:
                sent += 1
                body = bodies[(k * 7919 + sent) % len(bodies)]
                t0 = time.perf_counter()
                status, answer = await connection.post(body)
                latencies.append(time.perf_counter() - t0)
                if status != 200 or len(json.loads(answer)["predictions"]) != size:
                    errors += 1
        finally:
            connection.close()

    warm = await Connection.open(port)
    for body in bodies[:20]:
        await warm.post(body)
    warm.close()
    connections = [await Connection.open(port) for _ in range(clients)]  # keep-alive, opened before timing
    stop_at = time.perf_counter() + max_seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(client(k, c) for k, c in enumerate(connections)))
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "rows_per_request": size,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 1),
        "rows_per_s": round(len(latencies) * size / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artefact", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="frappe")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--sizes", default="1,256")
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    pool = instances(args.data, args.dataset, 20_000)
    port = free_port()
    command = [sys.executable, "-m", "featmux.cli.main", "serve", str(args.artefact), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--threads", str(args.threads), "--max-wait-ms", str(args.max_wait_ms)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            for clients in (int(c) for c in args.clients.split(",")):
                result = asyncio.run(cell(port, pool, clients, size, args.max_requests, args.max_seconds))
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        server.terminate()
        server.wait(timeout=30)
    record = {
        "artefact": str(args.artefact),
        "precision": json.loads((args.artefact / "artefact.json").read_text())["precision"],
        "server_threads": args.threads,
        "max_wait_ms": args.max_wait_ms,
        "caps": {"max_requests": args.max_requests, "max_seconds": args.max_seconds},
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "cells": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
