"""The document every matloop validation Maker returns: labelled properties with units."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pymatgen.core import Molecule, Structure


class ValidationDocument(BaseModel):
    """Labels of one structure at one level, with what produced them."""

    level: str = Field(description="Validation level name, e.g. 'chgnet', 'cp2k', 'xtb'.")
    properties: dict[str, float] = Field(description="Property name -> value.")
    units: dict[str, str] = Field(description="Property name -> unit.")
    code: str = Field(description="Code that computed the labels (CHGNet, SevenNet, CP2K, tblite).")
    code_version: str = Field(description="Version of that code.")
    final_structure: Structure | Molecule | None = Field(
        None, description="Structure or molecule after relaxation (None for a single point: the input's)."
    )
    references: dict[str, float] = Field(
        default_factory=dict, description="Elemental reference energies used (eV/atom)."
    )
    dir_name: str | None = Field(None, description="Directory the calculation ran in.")
