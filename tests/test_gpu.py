"""CUDA runs give the CPU's numbers (skipped where no GPU is visible, as on CI)."""

import pytest
import torch

import entk
from entk.matfree import param_matvec
from entk.models import ModMLP, modadd_inputs
from entk.workflow import resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DT = torch.float64


def model_and_data(device):
    model = ModMLP(13, 64, torch.Generator().manual_seed(0)).to(device=device, dtype=DT)
    return model, modadd_inputs(13).to(device=device, dtype=DT)


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


def test_kernels_products_and_eigenpairs_match_the_cpu():
    cpu, gpu = model_and_data("cpu"), model_and_data("cuda")
    for outputs in ("flatten", "diag_mean"):
        k_cpu = entk.compact_ntk(*cpu, outputs=outputs).dense()
        k_gpu = entk.compact_ntk(*gpu, outputs=outputs).dense()
        assert k_gpu.device.type == "cuda"
        assert torch.allclose(k_gpu.cpu(), k_cpu, rtol=1e-10, atol=1e-12 * k_cpu.abs().max())
    u = torch.randn(sum(p.numel() for p in cpu[0].parameters()), 5, dtype=DT)
    assert torch.allclose(param_matvec(*gpu)[0](u.cuda()).cpu(), param_matvec(*cpu)[0](u), rtol=1e-10)
    # P = 2496 > C·N = 2197 here, so the compact kernel is dense and "gram" does not apply.
    for method in ("dense", "matrix_free"):
        v_cpu, _ = entk.top_eigenpairs(*cpu, 10, method=method)
        v_gpu, vec_gpu = entk.top_eigenpairs(*gpu, 10, method=method)
        assert vec_gpu.device.type == "cuda"
        assert torch.allclose(v_gpu.cpu(), v_cpu, rtol=1e-8)
