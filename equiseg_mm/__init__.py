"""equiseg-mm: EQUISeg (arXiv 2509.24505) as an MMSegmentation 1.x plugin.

Importing the package checks the dependency versions, applies the runtime compatibility fixes in
:mod:`equiseg_mm.compat`, and registers every part into mmseg's registries, so a stock config only
needs ``custom_imports=dict(imports=['equiseg_mm'], allow_failed_imports=False)``.
"""
from .compat import apply_compat, check_versions
from .version import __version__

check_versions()
apply_compat()

from . import datasets, engine, evaluation, models  # noqa: E402,F401  (registration)

__all__ = ['__version__', 'apply_compat', 'check_versions']
