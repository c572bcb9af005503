"""The HTTP floor of dropserve's stack: FastAPI + uvicorn reading the body and answering a
constant predict-shaped JSON body. Nothing can be faster on this stack; dropserve is measured
against it. Usage: python -m bench.floor_server PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

_ANSWER = orjson.dumps(
    {
        "model": {"name": "mnist-mlp", "version": 1},
        "predictions": [{"label": 7, "class_name": "7", "confidence": 0.99, "probabilities": [0.001] * 10}],
    }
)


def create_floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(_ANSWER, media_type="application/json")

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


if __name__ == "__main__":
    uvicorn.run(create_floor_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
