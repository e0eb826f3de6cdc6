"""Validation calculations: oracle levels as jobflow Makers, executors, and their SQLite state.

The tools in :mod:`matloop.tools.validate` are the entry points; the Makers here
(:class:`~matloop.validation.makers.FormationEnergyMaker`,
:class:`~matloop.validation.makers.XtbMaker`, :class:`~matloop.validation.cp2k.Cp2kLabelMaker`,
:class:`~matloop.validation.vasp.VaspLabelMaker`) can be used in any jobflow Flow.
"""
