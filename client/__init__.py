"""A typed Python client for a dropserve server, sync and async, and the `dropserve` command.

    from client import Client

    with Client("http://127.0.0.1:8000") as dropserve:
        answer = dropserve.uncertainty("docs/examples/digit-7.png", samples=100, seed=1)
        print(answer.predictions[0].label, answer.predictions[0].mutual_information)

It talks HTTP only: it imports neither the service nor the training code.
"""

from client.errors import (
    BadRequest,
    DropserveError,
    InvalidValue,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from client.http import AsyncClient, Client
from client.types import (
    ModelRef,
    ModelSummary,
    Prediction,
    PredictResponse,
    ReloadResponse,
    UncertainPrediction,
    UncertaintyResponse,
    VersionReload,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "DropserveError",
    "InvalidValue",
    "ModelRef",
    "ModelSummary",
    "NotFound",
    "PayloadTooLarge",
    "PredictResponse",
    "Prediction",
    "ReloadResponse",
    "RequestTimeout",
    "Unauthorized",
    "Unavailable",
    "UncertainPrediction",
    "UncertaintyResponse",
    "UnsupportedMediaType",
    "VersionReload",
]
