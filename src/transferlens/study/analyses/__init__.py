"""A finished study -> the result tables of DESIGN.md, through the analysis library.

:data:`ANALYSES` (``registry.py``) names every analysis once, with its typed settings
(``settings.py``) and its study adapter (one module each: which runs play which role,
see ``context.py``); :func:`run_analyses` runs the requested ones in that order.
"""

from transferlens.study.analyses.context import StudyContext, TargetModels
from transferlens.study.analyses.registry import ANALYSES, ANALYSIS_NAMES, Analysis
from transferlens.study.analyses.run import run_analyses

__all__ = ["ANALYSES", "ANALYSIS_NAMES", "Analysis", "StudyContext", "TargetModels", "run_analyses"]
