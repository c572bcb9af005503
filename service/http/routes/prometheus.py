"""GET /metrics: the Prometheus text format (service/http/metrics.py says what is in it)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.http.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE)
