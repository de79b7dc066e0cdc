"""entk: feature identification via the empirical NTK (J. Lin, arXiv:2510.00468).

Names are imported lazily so that light modules (``entk.config``, used while Snakemake parses
the workflow) do not pay for importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "OUTPUT_MODES": "entk.kernels",
    "Kernel": "entk.kernels",
    "compact_ntk": "entk.kernels",
    "empirical_ntk": "entk.kernels",
    "layerwise_ntk": "entk.kernels",
    "layer_ntks": "entk.kernels",
    "cliff": "entk.spectrum",
    "Cliff": "entk.spectrum",
    "find_cliffs": "entk.spectrum",
    "detect_cliff": "entk.spectrum",
    "fix_signs": "entk.eigen",
    "kernel_eigenpairs": "entk.eigen",
    "top_eigenpairs": "entk.eigen",
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
