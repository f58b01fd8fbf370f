from .fast_path import enable_fast_path, reuse_branch_outputs

__all__ = ['enable_fast_path', 'reuse_branch_outputs']
