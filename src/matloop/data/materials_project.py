"""Materials Project summaries through ``mp-api`` (extra ``matloop[mp]``), failing fast offline.

Before any mp-api call the key (``MP_API_KEY``) and the network are checked: the API host
must resolve and accept a TCP connection within ``timeout_s`` seconds, so a machine without
network gets a clear :class:`~matloop.errors.ToolInputError` in about that time instead of
mp-api's retries.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from functools import partial
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from pymatgen.core import Structure

from matloop.data.accounting import Accounting
from matloop.data.readers import build_table
from matloop.data.table import SourceTable
from matloop.errors import MissingExtraError, ToolInputError

MP_ENDPOINT = "https://api.materialsproject.org/"
MP_UNITS = {
    "formation_energy_per_atom": "eV/atom",
    "energy_above_hull": "eV/atom",
    "band_gap": "eV",
    "density": "g/cm^3",
    "volume": "Å^3",
    "total_magnetization": "μB/cell",
}
# matloop property -> mp-api summary search range argument
_RANGE_ARGS = {
    "formation_energy_per_atom": "formation_energy",
    "energy_above_hull": "energy_above_hull",
    "band_gap": "band_gap",
    "density": "density",
    "volume": "volume",
    "total_magnetization": "total_magnetization",
}
DEFAULT_MAX_ROWS = 1000
_OFFLINE_HINT = "use a bundled source instead (mp_formation_energy, mp_dielectric, mp_elastic, mp_piezo)"


class MPQuery(BaseModel):
    """Server-side filters of a Materials Project summary search."""

    elements: list[str] | None = Field(default=None, description="All of these elements.")
    exclude_elements: list[str] | None = Field(default=None, description="None of these elements.")
    num_elements: tuple[int, int] | None = Field(default=None, description="Range of the number of elements.")
    num_sites: tuple[int, int] | None = Field(default=None, description="Range of the number of sites.")
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict, description="Property ranges.")


def mp_installed() -> bool:
    return importlib.util.find_spec("mp_api") is not None


def mp_api_key() -> str | None:
    return os.environ.get("MP_API_KEY") or None


def check_reachable(url: str = MP_ENDPOINT, timeout_s: float = 2.0) -> None:
    """Raise :class:`ToolInputError` unless ``url``'s host resolves and connects within ``timeout_s``."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    # getaddrinfo has no timeout of its own: run the probe in a thread and stop waiting
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    error = outcome[0] if outcome else TimeoutError(f"no answer within {timeout_s:g} s")
    if error is not None:
        raise ToolInputError(
            f"expected network access to the Materials Project ({host}), "
            f"got {type(error).__name__}: {error}; {_OFFLINE_HINT}"
        )


def fetch_materials_project(
    query: MPQuery, *, max_rows: int | None = None, timeout_s: float = 2.0, endpoint: str = MP_ENDPOINT
) -> SourceTable:
    """Summary documents (structure and the properties in :data:`MP_UNITS`) matching ``query``."""
    key = mp_api_key()
    if key is None:
        raise ToolInputError(
            "expected a Materials Project API key in the MP_API_KEY environment variable, got none; "
            + _OFFLINE_HINT
        )
    if not mp_installed():
        raise MissingExtraError("the Materials Project source needs mp-api: pip install 'matloop[mp]'")
    check_reachable(endpoint, timeout_s)
    from mp_api.client import MPRester

    rows = max_rows or DEFAULT_MAX_ROWS
    chunk = min(rows, 1000)
    search: dict[str, Any] = {k: v for k, v in query.model_dump(exclude={"ranges"}).items() if v is not None}
    search.update({_RANGE_ARGS[k]: v for k, v in query.ranges.items() if k in _RANGE_ARGS})
    try:
        with MPRester(key, endpoint=endpoint, mute_progress_bars=True) as mpr:
            docs = mpr.materials.summary.search(
                **search,
                fields=["material_id", "structure", *MP_UNITS],
                chunk_size=chunk,
                num_chunks=-(-rows // chunk),
            )
    except Exception as exc:  # mp-api raises its own errors for bad keys, queries and server faults
        raise ToolInputError(
            f"expected a successful Materials Project query, got {type(exc).__name__}: {str(exc)[:300]}; "
            + _OFFLINE_HINT
        ) from exc
    return table_from_docs(docs[:rows], query, endpoint)


def table_from_docs(docs: list[Any], query: MPQuery, endpoint: str = MP_ENDPOINT) -> SourceTable:
    """A table of summary documents; documents without a usable structure are rejected and reported."""
    properties = pd.DataFrame(
        {name: [np.nan if getattr(d, name) is None else getattr(d, name) for d in docs] for name in MP_UNITS},
        index=range(len(docs)),
    )
    rows = [
        (k, str(d.material_id), f"row {k + 1} (id {str(d.material_id)!r})", partial(_structure, d))
        for k, d in enumerate(docs)
    ]
    return build_table(
        rows,
        properties,
        dict(MP_UNITS),
        name="the Materials Project answer",
        source="materials_project",
        account=Accounting(),
        meta={
            "query": query.model_dump(),
            "endpoint": endpoint,
            "reference": "Materials Project (CC-BY 4.0)",
        },
    )


def _structure(doc: Any) -> Structure:
    if doc.structure is None:
        raise ValueError("no structure in the document")
    return doc.structure
