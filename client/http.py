"""`Client` and `AsyncClient`: the native API over httpx, the same methods sync and async.

Images (paths or bytes) go as multipart `file` parts with the options in the query string;
`instances` (28x28 or flat 784 lists of pixels in [0, 1]) go as JSON. Every answer comes back as
a dataclass (client/types.py); every refusal as the exception for its status (client/errors.py).
A 503 (overloaded, or no model loaded yet) is retried after its Retry-After, at most `retries`
times and each wait capped at `max_retry_wait_s`. Network failures are httpx's own exceptions.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from client.errors import error_from_response, retry_after_seconds
from client.types import ModelSummary, PredictResponse, ReloadResponse, UncertaintyResponse

DEFAULT_URL = "http://127.0.0.1:8000"
Image = str | os.PathLike[str] | bytes  # a file's path, or its bytes
Instances = Sequence[Sequence[float] | Sequence[Sequence[float]]]  # flat 784 or 28x28 lists


@dataclass(frozen=True)
class _Call:
    """One HTTP request, built once and sent again as it is on a retry."""

    method: str
    path: str
    params: dict[str, str] | None = None
    json: Any = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    admin: bool = False  # authorized with the admin key, not the API key


@dataclass(frozen=True)
class _Config:
    url: str
    api_key: str | None
    admin_key: str | None
    retries: int
    max_retry_wait_s: float

    @classmethod
    def make(
        cls, url: str | None, api_key: str | None, admin_key: str | None, retries: int, max_wait: float
    ) -> _Config:
        """Unset url and api_key come from DROPSERVE_URL and DROPSERVE_API_KEY."""
        url = url or os.environ.get("DROPSERVE_URL") or DEFAULT_URL
        api_key = api_key if api_key is not None else os.environ.get("DROPSERVE_API_KEY") or None
        return cls(url.rstrip("/"), api_key, admin_key, retries, max_wait)

    def headers(self, call: _Call) -> dict[str, str]:
        key = self.admin_key if call.admin else self.api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    def retry_wait(self, response: httpx.Response, retried: int) -> float | None:
        """Seconds to wait before sending again, or None to answer now."""
        if response.status_code != 503 or retried >= self.retries:
            return None
        asked = retry_after_seconds(response.headers)
        return min(1.0 if asked is None else asked, self.max_retry_wait_s)


def _inference(
    kind: str,
    images: Sequence[Image],
    instances: Instances | None,
    model: str | None,
    version: int | None,
    options: dict[str, Any],
) -> _Call:
    if bool(images) == (instances is not None):
        raise ValueError("send images or instances=, one of the two")
    if model is None and version is not None:
        raise ValueError("a version needs its model's name")
    path = f"/v1/{kind}"
    if model is not None:
        pinned = "" if version is None else f"/versions/{int(version)}"
        path = f"/v1/models/{quote(model, safe='')}{pinned}/{kind}"
    options = {key: value for key, value in options.items() if value is not None and value is not False}
    if instances is not None:
        return _Call("POST", path, json={"instances": [list(i) for i in instances], **options})
    params = {key: str(value).lower() if value is True else str(value) for key, value in options.items()}
    return _Call(
        "POST", path, params=params or None, files=[_file_part(i, image) for i, image in enumerate(images)]
    )


def _file_part(index: int, image: Image) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(image, bytes):
        return ("file", (f"image-{index}", image, "application/octet-stream"))
    path = Path(image)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return ("file", (path.name, path.read_bytes(), media_type))


def _answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer; the matching exception for any other."""
    if response.is_success:
        return response.json()
    raise error_from_response(response.status_code, response.headers, response.content)


def _request_id(response: httpx.Response) -> str | None:
    return response.headers.get("x-request-id")


class Client:
    """A dropserve server, over HTTP.

    url: the server (default DROPSERVE_URL, else http://127.0.0.1:8000); api_key: sent as
    `Authorization: Bearer` (default DROPSERVE_API_KEY); admin_key: for `reload`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = _Config.make(url, api_key, admin_key, retries, max_retry_wait_s)
        self._http = httpx.Client(base_url=self._config.url, timeout=timeout, transport=transport)

    @property
    def url(self) -> str:
        return self._config.url

    def predict(
        self,
        *images: Image,
        instances: Instances | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> PredictResponse:
        """Deterministic predictions for images (paths or bytes) or JSON `instances`; the server's
        default model unless `model` (and `version`) are named."""
        response = self._send(_inference("predict", images, instances, model, version, {}))
        return PredictResponse.from_json(_answer(response), _request_id(response))

    def uncertainty(
        self,
        *images: Image,
        instances: Instances | None = None,
        samples: int | None = None,
        seed: int | None = None,
        return_samples: bool = False,
        coverage: float | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> UncertaintyResponse:
        """MC-dropout statistics from `samples` passes; the same `seed`, the same answer."""
        options = {"samples": samples, "seed": seed, "return_samples": return_samples, "coverage": coverage}
        response = self._send(_inference("uncertainty", images, instances, model, version, options))
        return UncertaintyResponse.from_json(_answer(response), _request_id(response))

    def models(self) -> list[ModelSummary]:
        """The models served, with their versions."""
        return [ModelSummary.from_json(m) for m in _answer(self._send(_Call("GET", "/v1/models")))["models"]]

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        """A model's metadata: input, classes, architecture, metrics, uncertainty defaults."""
        pinned = "" if version is None else f"/versions/{int(version)}"
        return dict(_answer(self._send(_Call("GET", f"/v1/models/{quote(model, safe='')}{pinned}"))))

    def ready(self) -> bool:
        """Whether the server has a model loaded (GET /readyz), without retrying."""
        return self._http.get("/readyz").status_code == 200

    def reload(self, model: str) -> ReloadResponse:
        """Rescan a model's folder on the server (needs `admin_key`): what became of each version."""
        call = _Call("POST", f"/v1/models/{quote(model, safe='')}/reload", admin=True)
        return ReloadResponse.from_json(_answer(self._send(call)))

    def _send(self, call: _Call) -> httpx.Response:
        retried = 0
        while True:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                files=call.files,
                headers=self._config.headers(call),
            )
            wait = self._config.retry_wait(response, retried)
            if wait is None:
                return response
            retried += 1
            time.sleep(wait)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """`Client`'s methods as coroutines, for asyncio programs."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = _Config.make(url, api_key, admin_key, retries, max_retry_wait_s)
        self._http = httpx.AsyncClient(base_url=self._config.url, timeout=timeout, transport=transport)

    @property
    def url(self) -> str:
        return self._config.url

    async def predict(
        self,
        *images: Image,
        instances: Instances | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> PredictResponse:
        """As `Client.predict`."""
        response = await self._send(_inference("predict", images, instances, model, version, {}))
        return PredictResponse.from_json(_answer(response), _request_id(response))

    async def uncertainty(
        self,
        *images: Image,
        instances: Instances | None = None,
        samples: int | None = None,
        seed: int | None = None,
        return_samples: bool = False,
        coverage: float | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> UncertaintyResponse:
        """As `Client.uncertainty`."""
        options = {"samples": samples, "seed": seed, "return_samples": return_samples, "coverage": coverage}
        response = await self._send(_inference("uncertainty", images, instances, model, version, options))
        return UncertaintyResponse.from_json(_answer(response), _request_id(response))

    async def models(self) -> list[ModelSummary]:
        """As `Client.models`."""
        answer = _answer(await self._send(_Call("GET", "/v1/models")))
        return [ModelSummary.from_json(m) for m in answer["models"]]

    async def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        """As `Client.metadata`."""
        pinned = "" if version is None else f"/versions/{int(version)}"
        return dict(_answer(await self._send(_Call("GET", f"/v1/models/{quote(model, safe='')}{pinned}"))))

    async def ready(self) -> bool:
        """As `Client.ready`."""
        return (await self._http.get("/readyz")).status_code == 200

    async def reload(self, model: str) -> ReloadResponse:
        """As `Client.reload`."""
        call = _Call("POST", f"/v1/models/{quote(model, safe='')}/reload", admin=True)
        return ReloadResponse.from_json(_answer(await self._send(call)))

    async def _send(self, call: _Call) -> httpx.Response:
        retried = 0
        while True:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                files=call.files,
                headers=self._config.headers(call),
            )
            wait = self._config.retry_wait(response, retried)
            if wait is None:
                return response
            retried += 1
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
