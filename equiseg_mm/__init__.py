"""equiseg-mm: EQUISeg (arXiv 2509.24505) as an MMSegmentation 1.x plugin.

Importing the package checks the dependency versions and registers every part into mmseg's
registries, so a stock config only needs
``custom_imports=dict(imports=['equiseg_mm'], allow_failed_imports=False)``. Nothing else in the
process changes unless the environment variable ``EQUISEG_COMPAT`` asks for the compatibility
fixes of :mod:`equiseg_mm.compat`; they are applied here, before the registration imports.
"""
from . import compat
from .compat import check_versions
from .version import __version__

check_versions()
compat.enable_from_env()
compat.require_mmcv_ops()

from . import datasets, deploy, engine, evaluation, models  # noqa: E402,F401  (registration)

__all__ = ['__version__', 'check_versions', 'compat']
