from .branch_output_cache import BranchOutputCache, reuse_branch_outputs
from .fast_path import enable_fast_path

__all__ = ['BranchOutputCache', 'enable_fast_path', 'reuse_branch_outputs']
