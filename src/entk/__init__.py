"""entk: feature identification via the empirical NTK (J. Lin, arXiv:2510.00468).

Names are imported lazily so that light modules (``entk.pipeline.config``, used while Snakemake parses
the workflow) do not pay for importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "NTK": "entk.core.ntk",
    "OUTPUT_MODES": "entk.core.kernel",
    "Kernel": "entk.core.kernel",
    "compact_ntk": "entk.core.ntk",
    "empirical_ntk": "entk.core.ntk",
    "layerwise_ntk": "entk.core.ntk",
    "layer_ntks": "entk.core.ntk",
    "cliff": "entk.analyses.spectrum",
    "Cliff": "entk.analyses.spectrum",
    "find_cliffs": "entk.analyses.spectrum",
    "detect_cliff": "entk.analyses.spectrum",
    "fix_signs": "entk.core.solvers",
    "kernel_eigenpairs": "entk.core.eigen",
    "top_eigenpairs": "entk.core.ntk",
    "laplacians": "entk.analyses.rotation",
    "smooth_rotation": "entk.analyses.rotation",
    "fourier_families": "entk.analyses.rotation",
    "family_correlation": "entk.analyses.rotation",
    "subspace_overlap": "entk.analyses.rotation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'entk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
