"""The CP2K level: PBE DFT through atomate2's CP2K ``StaticMaker`` with settings tuned for small cells.

Set-up (done once, automatically): pymatgen's CP2K data directory is generated from the
Debian ``cp2k`` data (``pmg config --cp2k /usr/share/cp2k DIR``; DIR must not exist, so it is
built under a temporary name and renamed) into ``settings.cache_dir/cp2k-data``, and the
environment gets ``PMG_CP2K_DATA_DIR``, ``PMG_DEFAULT_CP2K_FUNCTIONAL=PBE`` and
``OMP_NUM_THREADS``.

Tuned defaults (2-atom MgO: ~127 s with atomate2's defaults, ~24-35 s with these, same energy
to 1e-6 Ha): the DZVP instead of TZVP MOLOPT basis of each element (same GTH potential),
a 400 Ry cut-off, ``EPS_DEFAULT`` 1e-10 and ``EPS_PGF_ORB`` 1e-5.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from atomate2.cp2k.jobs.core import StaticMaker
from atomate2.cp2k.sets.core import StaticSetGenerator
from jobflow import Flow, Maker, job
from pymatgen.core import Structure

from matloop.settings import Settings
from matloop.validation.documents import ValidationDocument

CP2K_SOURCE_DATA = Path("/usr/share/cp2k")
TUNED_SETTINGS: dict[str, Any] = {"cutoff": 400, "eps_default": 1e-10, "eps_pgf_orb": 1e-5}
_RESTART_GLOB = "CP2K-RESTART.kp*"


def cp2k_data_dir(cache_dir: Path, source: Path = CP2K_SOURCE_DATA) -> Path:
    """pymatgen's CP2K data directory under ``cache_dir``, generated on first use."""
    target = Path(cache_dir) / "cp2k-data"
    if target.is_dir():
        return target
    if not source.is_dir():
        raise RuntimeError(f"CP2K data not found at {source}; install CP2K (apt-get install cp2k)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"cp2k-data.tmp-{uuid.uuid4().hex[:8]}")
    subprocess.run(
        [sys.executable, "-m", "pymatgen.cli.pmg", "config", "--cp2k", str(source), str(tmp)],
        check=True,
        capture_output=True,
    )
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def configure_cp2k(settings: Settings) -> Path:
    """Generate the data directory if needed and export the environment CP2K jobs read."""
    from pymatgen.core import SETTINGS as PMG_SETTINGS

    data_dir = cp2k_data_dir(settings.cache_dir)
    env = {
        "PMG_CP2K_DATA_DIR": str(data_dir),
        "PMG_DEFAULT_CP2K_FUNCTIONAL": "PBE",
        "OMP_NUM_THREADS": str(settings.validation.cp2k_threads),
    }
    os.environ.update(env)
    PMG_SETTINGS.update({k: v for k, v in env.items() if k.startswith("PMG_")})
    return data_dir


def dzvp_basis_overrides(structure: Structure, data_dir: Path) -> dict[str, dict[str, str]]:
    """Per element, the hash of the DZVP MOLOPT basis matching atomate2's default TZVP choice."""
    defaults = StaticSetGenerator().config_dict["cp2k_input"]["basis_and_potential"]
    overrides = {}
    for element in sorted(structure.symbol_set):
        data = yaml.safe_load((data_dir / element).read_text())
        basis_sets = data["basis_sets"]
        current = basis_sets.get(defaults.get(element, {}).get("basis") or "")
        if current is None:
            continue
        wanted = current["name"].replace("TZVP", "DZVP")
        for key, basis in basis_sets.items():
            if basis["name"] == wanted and basis["filename"] == current["filename"]:
                overrides[element] = {"basis": key}
                break
    return overrides


@job
def cp2k_document(task_doc: Any) -> ValidationDocument:
    """Labels from a CP2K task document; deletes the large k-point restart files."""
    from importlib.metadata import PackageNotFoundError, version

    output = task_doc.output
    dir_name = str(task_doc.dir_name).split(":", 1)[-1]
    for path in Path(dir_name).glob(_RESTART_GLOB):
        path.unlink()
    structure = output.structure
    properties = {"energy": float(output.energy), "energy_per_atom": float(output.energy) / len(structure)}
    units = {"energy": "eV", "energy_per_atom": "eV/atom"}
    if output.bandgap is not None:
        properties["band_gap"] = float(output.bandgap)
        units["band_gap"] = "eV"
    try:
        atomate2_version = version("atomate2")
    except PackageNotFoundError:  # pragma: no cover
        atomate2_version = "unknown"
    cp2k_version = (
        getattr(task_doc.calcs_reversed[0], "cp2k_version", None) if task_doc.calcs_reversed else None
    )
    return ValidationDocument(
        level="cp2k",
        properties=properties,
        units=units,
        code="CP2K PBE (atomate2 StaticMaker)",
        code_version=str(cp2k_version or f"atomate2 {atomate2_version}"),
        final_structure=structure,
        dir_name=dir_name,
    )


@dataclass
class Cp2kLabelMaker(Maker):
    """PBE static calculation with CP2K and its labels (total energy, band gap when available).

    Args:
        name: Flow name.
        data_dir: pymatgen CP2K data directory (see :func:`configure_cp2k`).
        input_settings: CP2K input settings applied on top of atomate2's defaults.
        tuned_basis: Use the per-element DZVP basis overrides.
        cp2k_cmd: The CP2K executable.
        walltime_s: Wall-time limit in seconds (CP2K runs under ``timeout``), or None.
    """

    name: str = "cp2k static"
    data_dir: Path | None = None
    input_settings: dict[str, Any] = field(default_factory=lambda: dict(TUNED_SETTINGS))
    tuned_basis: bool = True
    cp2k_cmd: str = "cp2k.psmp"
    walltime_s: int | None = None

    def make(self, structure: Structure) -> Flow:
        """A Flow of the atomate2 static job and the label summary."""
        settings = dict(self.input_settings)
        if self.tuned_basis and self.data_dir is not None:
            settings["basis_and_potential"] = dzvp_basis_overrides(structure, Path(self.data_dir))
        cmd = f"timeout {int(self.walltime_s)} {self.cp2k_cmd}" if self.walltime_s else self.cp2k_cmd
        static = StaticMaker(
            input_set_generator=StaticSetGenerator(user_input_settings=settings),
            run_cp2k_kwargs={"cp2k_cmd": cmd},
        ).make(structure)
        summary = cp2k_document(static.output)
        return Flow([static, summary], output=summary.output, name=self.name)
