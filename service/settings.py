"""Service settings from `DROPSERVE_*` environment variables; unsafe values fail at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DROPSERVE_", protected_namespaces=(), extra="ignore")

    model_repository: Path = Path("artifacts")
    """Model repository: <repository>/<name>/<version>/ with model.json and model.safetensors."""
    default_model: str = "mnist-mlp"
    """Model served by /v1/predict and /v1/uncertainty."""
    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 in containers."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port."""
    api_key: SecretStr | None = None
    """When set, inference routes need `Authorization: Bearer <key>`."""
    admin_key: SecretStr | None = None
    """When set, enables the reload routes (POST /v1/models/{name}/reload, /v1/admin/reload) with
    `Authorization: Bearer <key>`."""
    poll_interval_s: float | None = Field(None, gt=0.0)
    """When set, every worker rescans the model repository this often and serves new versions
    (off by default). Each worker polls on its own, so for up to one interval workers may answer
    from different versions."""
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger gets 413."""
    max_buffered_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    """Bytes of request and response bodies one process holds at once, over every request in
    progress (a `return_samples` answer reserves 48 bytes a value while it is built); a body over
    64 KiB that would pass it gets 503 with Retry-After, so that a burst of large uploads, or of
    large answers clients are slow to read, cannot exhaust memory. At least max_body_bytes."""
    max_instances: int = Field(256, ge=1)
    """Most images or instances in one request; more gets 413."""
    max_image_pixels: int = Field(16_000_000, ge=784)
    """Largest decoded image (width x height); larger gets 413 (decompression-bomb guard)."""
    mc_samples_default: int = Field(100, ge=1)
    """MC-dropout passes when a request names none."""
    mc_samples_max: int = Field(10_000, ge=1)
    """Upper bound on requested MC passes; more gets 422."""
    max_response_values: int = Field(2_000_000, ge=1000)
    """Most sampled probabilities one answer may carry (instances x samples x classes with
    `return_samples`, about 20 bytes of JSON each); more gets 413 saying what to send instead."""
    queue_max: int = Field(256, ge=1)
    """Inference requests in the engine (decoded, queued or computing) before new ones get 503
    with Retry-After. Requests still uploading or decoding do not count."""
    queue_max_wait_ms: float = Field(250.0, gt=0.0)
    """Longest a decoded request may wait for its first compute step; one that waited longer gets
    503 with Retry-After, which keeps accepted requests' latency bounded under overload."""
    request_timeout_s: float = Field(30.0, gt=0.0)
    """Longest an inference request may compute; past it, its computation stops and it gets 503. A
    /v2 request's `timeout` parameter may shorten it for that request, never lengthen it."""
    body_timeout_s: float = Field(10.0, gt=0.0)
    """Longest a request body may take to arrive once its headers have; past it, 408. Also the
    longest a client may leave each 256 KiB of a large answer unread; past it, its connection is
    closed."""
    keep_alive_s: int = Field(75, ge=1)
    """How long an idle keep-alive connection stays open. Longer than a proxy or client in front
    keeps one idle (nginx's upstream pool 60 s, AWS load balancers 60 s, httpx 5 s), so that they,
    not the server, close it: a request written onto a connection the server is closing at that
    moment is reset, a 502 behind nginx (uvicorn's own 5 s raced with all of them)."""
    compute_slice_ms: float = Field(5.0, gt=0.0, le=1000.0)
    """Compute the engine runs before it lets the event loop serve I/O again (a step, such as a
    chunk of MC passes, is never cut)."""
    decode_threads: int = Field(2, ge=1, le=64)
    """Threads that decode large bodies and images off the event loop."""
    workers: int = Field(1, ge=1, le=64)
    """Server processes, each with its own engine, copy of the models and listening socket (the
    kernel spreads connections over them): the way to use more than one core."""
    torch_threads: int = Field(1, ge=1, le=256)
    """Intra-op threads for torch per process; small MLP requests run fastest on one."""
    device: str = "cpu"
    """Torch device the models run on: cpu, cuda, cuda:0 ..."""
    log_format: Literal["text", "json"] = "text"
    """Log line format."""
    access_log: bool = True
    """One log line per request (id, route, model, status, latency, round size, samples)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe level logged."""

    @field_validator("api_key", "admin_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("keys must be at least 16 characters; generate one with `openssl rand -hex 32`")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.mc_samples_default > self.mc_samples_max:
            raise ValueError("mc_samples_default must not exceed mc_samples_max")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_bytes must be at least max_body_bytes")
        return self
