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
    """When set, enables POST /v1/admin/reload with `Authorization: Bearer <key>`."""
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger gets 413."""
    max_instances: int = Field(256, ge=1)
    """Most images or instances in one request; more gets 413."""
    max_image_pixels: int = Field(16_000_000, ge=784)
    """Largest decoded image (width x height); larger gets 413 (decompression-bomb guard)."""
    mc_samples_default: int = Field(100, ge=1)
    """MC-dropout passes when a request names none."""
    mc_samples_max: int = Field(10_000, ge=1)
    """Upper bound on requested MC passes; more gets 422."""
    batch_max_size: int = Field(64, ge=1)
    """Most instances one batched forward pass gathers across concurrent requests."""
    batch_max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0)
    """Longest a request waits for others to join its batch."""
    queue_max: int = Field(128, ge=1)
    """Inference requests in flight (admitted and not yet answered) before new ones get 503 with
    Retry-After, refused before the body is read so that shedding stays cheap; the micro-batching
    queue holds at most as many."""
    queue_max_wait_ms: float = Field(250.0, gt=0.0)
    """Longest a request may wait for inference, from its arrival (headers parsed) to the start of
    its batch; one that waited longer gets 503 with Retry-After, which keeps accepted requests'
    latency bounded under overload."""
    torch_threads: int = Field(1, ge=1, le=256)
    """Intra-op threads for torch; small MLP batches run fastest on one, and with one a request's
    answer does not depend on what shares its micro-batch."""
    inference_process: bool = True
    """Run batches of concurrent requests in a child process with its own interpreter lock, so
    that inference and the event loop never wait on each other for it (a lone request still runs
    in the server); false runs every batch in a thread of the server (one process to debug, and
    the tests' quick app). Each process holds its own copy of the weights."""
    request_timeout_s: float = Field(30.0, gt=0.0)
    """Longest an inference request may wait and run before a 503."""
    device: str = "cpu"
    """Torch device the models run on: cpu, cuda, cuda:0 ..."""
    log_format: Literal["text", "json"] = "text"
    """Log line format."""
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
        return self
