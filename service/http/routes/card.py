"""A model version's card as training wrote it: card.md and the PNG plots beside it."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import FileResponse

from models.artifact import LoadedModel
from service.http.dependencies import RegistryDep
from service.http.errors import ApiError
from service.http.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)

CARD_FILE = "card.md"
_PLOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png")
# Plain files for the browser to show, never to run: no script, no sniffing, no framing.
CARD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get(
    "/models/{name}/versions/{version}/card",
    response_class=FileResponse,
    summary="A version's model card (Markdown); its plots are under .../card/{file}.png",
)
async def model_card(name: str, version: int, registry: RegistryDep) -> FileResponse:
    return card_file(registry.get(name, version), CARD_FILE)


@router.get(
    "/models/{name}/versions/{version}/card/{file}",
    response_class=FileResponse,
    summary="card.md or one of the card's PNG plots",
)
async def model_card_file(name: str, version: int, file: str, registry: RegistryDep) -> FileResponse:
    return card_file(registry.get(name, version), file)


def card_file(loaded: LoadedModel, file: str) -> FileResponse:
    """`file` when it is card.md or a PNG, and a regular file of the version's own folder: names are
    matched against the folder's listing, so no path (`..`, `/`, a link) reaches anything else."""
    where = f"{loaded.manifest.name} version {loaded.manifest.version}"
    if file != CARD_FILE and not _PLOT.fullmatch(file):
        raise ApiError(404, f"{where}'s card has card.md and PNG plots only, not {file[:100]!r}")
    listed = {p.name: p for p in loaded.path.iterdir() if p.is_file() and not p.is_symlink()}
    if file not in listed:
        plots = sorted(name for name in listed if _PLOT.fullmatch(name))
        has = ", ".join([CARD_FILE, *plots] if CARD_FILE in listed else plots) or "no card files"
        raise ApiError(404, f"{where} has no {file[:100]!r}; its card has: {has}")
    media_type = "text/markdown; charset=utf-8" if file == CARD_FILE else "image/png"
    return FileResponse(listed[file], media_type=media_type, headers=CARD_HEADERS)
