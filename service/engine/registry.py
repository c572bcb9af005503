"""The models the service holds: every published version found in the repository.

Reloading builds the new table beside the old one and swaps it in with one assignment, so a
reader sees the whole old table or the whole new one; a request holds the LoadedModel it started
with, so it finishes on that version whatever is reloaded meanwhile. Reloads may run in a thread
(they read files and build networks); a lock keeps two from interleaving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.artifact import ArtifactError, LoadedModel, load_artifact, scan_repository
from service.engine.errors import NotReady, RepositoryUnavailable, UnknownModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionResult:
    """What a reload did with one version."""

    version: int
    status: Literal["loaded", "kept", "failed", "removed"]
    error: str | None = None  # why it failed to load


@dataclass
class ModelRegistry:
    """name -> version -> loaded model. Versions that fail to load are logged and skipped."""

    repository: Path
    device: str = "cpu"
    models: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # "name/version" -> why it was skipped
    on_change: Callable[[list[LoadedModel]], None] | None = None  # hears every version held, after a reload
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load_all(self) -> dict[str, list[VersionResult]]:
        """(Re)scan the repository; already-loaded versions are kept, new ones loaded, versions no
        longer published dropped."""
        with self._lock:
            published = self._scan()
            return self._reload({name: published.get(name, []) for name in {*published, *self.models}})

    def load_model(self, name: str) -> list[VersionResult]:
        """(Re)scan one model's folder, as `load_all` does; other models are left as they are."""
        with self._lock:
            # Looked up among the folders listed, never joined into a path: a client's name stays data.
            published = self._scan().get(name, [])
            return self._reload({name: published})[name]

    def _scan(self) -> dict[str, list[int]]:
        """The published versions. Once versions are held, a repository folder that is not there or
        cannot be read is no reason to drop them (a volume unmounted for a moment, a mistyped move, a
        network file system's I/O error): RepositoryUnavailable, and every version held stays."""
        if not self.models:
            return scan_repository(self.repository)
        unavailable = RepositoryUnavailable(
            f"the model repository {self.repository} is not a readable folder (is its volume mounted?); "
            "the versions loaded before stay served"
        )
        if not self.repository.is_dir():
            raise unavailable
        try:
            return scan_repository(self.repository)
        except OSError as e:
            raise unavailable from e

    def _reload(self, published: dict[str, list[int]]) -> dict[str, list[VersionResult]]:
        models = dict(self.models)
        failures = {key: why for key, why in self.failures.items() if key.split("/")[0] not in published}
        results: dict[str, list[VersionResult]] = {}
        for name, versions in sorted(published.items()):
            held = self.models.get(name, {})
            kept: dict[int, LoadedModel] = {}
            outcome = results[name] = []
            for version in versions:
                loaded = held.get(version)
                if loaded is not None:
                    kept[version] = loaded
                    outcome.append(VersionResult(version, "kept"))
                    continue
                try:
                    path = self.repository / name / str(version)
                    kept[version] = servable(load_artifact(path, self.device))
                except ArtifactError as e:
                    key = f"{name}/{version}"
                    if self.failures.get(key) != str(e):  # once, not at every poll
                        log.error("skipping %s: %s", key, e)
                    failures[key] = str(e)
                    outcome.append(VersionResult(version, "failed", str(e)))
                    continue
                log.info("loaded %s version %s", name, version)
                outcome.append(VersionResult(version, "loaded"))
            for version in sorted(set(held) - set(versions)):
                log.info("dropped %s version %s: no longer in the repository", name, version)
                outcome.append(VersionResult(version, "removed"))
            if kept:
                models[name] = kept
            else:
                models.pop(name, None)
        self.models, self.failures = models, failures  # the swap: readers see old or new, whole
        if self.on_change is not None:
            self.on_change(self.loaded())
        return results

    def loaded(self) -> list[LoadedModel]:
        """Every version held, of every model."""
        return [loaded for versions in self.models.values() for loaded in versions.values()]

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        versions = self._versions(name)
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            available = ", ".join(str(v) for v in sorted(versions))
            raise UnknownModel(f"model {name!r} has no version {version}; available: {available}")
        return versions[chosen]

    def _versions(self, name: str) -> dict[int, LoadedModel]:
        models = self.models  # one read: a reload may swap the table meanwhile
        if not models:
            raise NotReady("no model is loaded yet")
        if name not in models:
            known = ", ".join(sorted(models))
            raise UnknownModel(f"unknown model {name!r}; this server has: {known}")
        return models[name]


SERVED_INPUT_SIZE = 784
"""Values per instance the decoders make (28x28 pixels): a version built for other inputs could only fail
at every request, so it is refused at load like any broken artifact."""


def servable(loaded: LoadedModel) -> LoadedModel:
    size = loaded.manifest.spec.input_size
    if size != SERVED_INPUT_SIZE:
        raise ArtifactError(
            f"{loaded.path}: its network takes {size} inputs; this service feeds {SERVED_INPUT_SIZE} "
            "(28x28 pixels)"
        )
    return loaded
