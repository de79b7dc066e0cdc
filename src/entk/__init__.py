"""entk: feature identification via the empirical NTK (J. Lin, arXiv:2510.00468)."""

from entk.eigen import cliff, fix_signs, kernel_eigenpairs, top_eigenpairs
from entk.kernels import OUTPUT_MODES, Kernel, compact_ntk, empirical_ntk, layerwise_ntk

__all__ = [
    "OUTPUT_MODES",
    "Kernel",
    "cliff",
    "compact_ntk",
    "empirical_ntk",
    "fix_signs",
    "kernel_eigenpairs",
    "layerwise_ntk",
    "top_eigenpairs",
]
