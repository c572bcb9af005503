"""Overload probe: a few keep-alive connections posting back to back while wrk floods the server,
recording each answer's status, latency and Retry-After, so accepted requests' latency is known
apart from the quick 503s (wrk's histogram mixes them). The flood comes from wrk, not from here:
a Python client driving 512 connections on the same two cores measured mostly its own lag."""

from __future__ import annotations

import asyncio
import time
from collections import Counter


async def _connection(
    host: str, port: int, request: bytes, deadline: float, results: list[tuple[int, float, bool]]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            await reader.readexactly(int(headers.get("content-length", "0")))
            results.append((status, time.perf_counter() - start, "retry-after" in headers))
            if headers.get("connection", "").lower() == "close":
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def overload(
    host: str, port: int, path: str, body: bytes, content_type: str, connections: int, seconds: float
) -> dict[str, object]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    results: list[tuple[int, float, bool]] = []

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *(_connection(host, port, request, deadline, results) for _ in range(connections))
        )

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    statuses = Counter(status for status, _, _ in results)
    accepted = sorted(latency for status, latency, _ in results if status == 200)
    rejected = [retry for status, _, retry in results if status == 503]

    def percentile(values: list[float], q: float) -> float | None:
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    return {
        "connections": connections,
        "seconds": elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted_per_s": len(accepted) / elapsed,
        "accepted_p50_s": percentile(accepted, 0.50),
        "accepted_p99_s": percentile(accepted, 0.99),
        "rejected_503": len(rejected),
        "rejected_503_with_retry_after": sum(rejected),
        "other_5xx": sum(n for s, n in statuses.items() if s >= 500 and s != 503),
    }
