"""entk: feature identification via the empirical NTK (J. Lin, arXiv:2510.00468).

Names are imported lazily so that light modules (``entk.config``, used while Snakemake parses
the workflow) do not pay for importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "NTK": "entk.ntk",
    "OUTPUT_MODES": "entk.kernel",
    "Kernel": "entk.kernel",
    "compact_ntk": "entk.ntk",
    "empirical_ntk": "entk.ntk",
    "layerwise_ntk": "entk.ntk",
    "layer_ntks": "entk.ntk",
    "cliff": "entk.spectrum",
    "Cliff": "entk.spectrum",
    "find_cliffs": "entk.spectrum",
    "detect_cliff": "entk.spectrum",
    "fix_signs": "entk.eigen",
    "kernel_eigenpairs": "entk.eigen",
    "top_eigenpairs": "entk.ntk",
    "laplacians": "entk.rotation",
    "smooth_rotation": "entk.rotation",
    "fourier_families": "entk.rotation",
    "family_correlation": "entk.rotation",
    "subspace_overlap": "entk.rotation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'entk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
