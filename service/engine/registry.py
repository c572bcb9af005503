"""The models the service holds: every published version found in the repository."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from models.artifact import ArtifactError, LoadedModel, load_artifact, scan_repository
from service.engine.errors import NotReady, UnknownModel

log = logging.getLogger(__name__)


@dataclass
class ModelRegistry:
    """name -> version -> loaded model. Versions that fail to load are logged and skipped."""

    repository: Path
    device: str = "cpu"
    models: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # "name/version" -> why it was skipped

    def load_all(self) -> None:
        """(Re)scan the repository; already-loaded versions are kept, new ones loaded."""
        found: dict[str, dict[int, LoadedModel]] = {}
        failures: dict[str, str] = {}
        for name, versions in scan_repository(self.repository).items():
            for version in versions:
                loaded = self.models.get(name, {}).get(version)
                if loaded is None:
                    try:
                        loaded = load_artifact(self.repository / name / str(version), self.device)
                    except ArtifactError as e:
                        failures[f"{name}/{version}"] = str(e)
                        log.error("skipping %s/%s: %s", name, version, e)
                        continue
                    log.info("loaded %s version %s", name, version)
                found.setdefault(name, {})[version] = loaded
        self.models, self.failures = found, failures

    def loaded(self) -> list[LoadedModel]:
        """Every version held, of every model."""
        return [loaded for versions in self.models.values() for loaded in versions.values()]

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def default_version(self, name: str) -> int:
        return max(self._versions(name))

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        versions = self._versions(name)
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            available = ", ".join(str(v) for v in sorted(versions))
            raise UnknownModel(f"model {name!r} has no version {version}; available: {available}")
        return versions[chosen]

    def _versions(self, name: str) -> dict[int, LoadedModel]:
        if not self.models:
            raise NotReady("no model is loaded yet")
        if name not in self.models:
            known = ", ".join(sorted(self.models))
            raise UnknownModel(f"unknown model {name!r}; this server has: {known}")
        return self.models[name]
