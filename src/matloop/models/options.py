"""The surrogate choices a campaign spec checks, importable without torch: the heads that sit on a
feature vector and the pretrained networks that can be fine-tuned under them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from matloop.errors import ToolInputError

VectorMethod = Literal["mlp_ensemble", "mlp_dropout", "gp"]
VECTOR_METHODS: tuple[str, ...] = get_args(VectorMethod)
#: The vector head standing for each UQ method (:data:`matloop.names.UQMethod`) a vector backbone takes.
VECTOR_HEADS: dict[str, VectorMethod] = {"ensemble": "mlp_ensemble", "mc_dropout": "mlp_dropout", "gp": "gp"}
#: The fine-tunable pretrained backbones and their number of interaction blocks
#: (:data:`matloop.models.finetuned.FINE_TUNABLE` implements them).
FINE_TUNABLE_BLOCKS: dict[str, int] = {"chgnet": 4, "sevennet_0": 5}
#: How many of the pretrained parameters train: the last N interaction blocks, or all of them.
TrainableBlocks = Annotated[int, Field(ge=0, le=5)] | Literal["all"]


def check_trainable_blocks(value: Any, n_blocks: int = 5) -> TrainableBlocks:
    """``value`` as an int in [0, n_blocks] or ``"all"``; anything else raises
    :class:`ToolInputError` saying what is accepted."""
    if value == "all":
        return "all"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= n_blocks:
        return value
    raise ToolInputError(
        f"expected trainable_blocks 0 (frozen backbone) to {n_blocks} (the last N interaction blocks "
        f"and the read-out) or 'all' (every pretrained parameter), got {value!r}"
    )
