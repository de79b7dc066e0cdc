"""CUDA runs give the CPU's numbers (skipped where no GPU is visible, as on CI)."""

import pytest
import torch

import entk
from entk.core.matfree import param_matvec, products
from entk.kinds.models import ModMLP, modadd_inputs
from entk.shared import resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DT = torch.float64


def assert_same_eigenvectors(values, vectors, other, rtol=1e-5):
    """vectors and other (D, k) span the same eigenspaces of values (k,) descending: per cluster of
    eigenvalues within 1e-4 of each other the projectors agree (the last cluster may be cut at k: left out)."""
    vals, a, b = values.cpu(), vectors.cpu(), other.cpu()
    cut = [0, *(i + 1 for i in range(len(vals) - 1) if vals[i] - vals[i + 1] > 1e-4 * vals.abs().max()), len(vals)]
    assert len(cut) > 2, "no complete eigenspace to compare"
    for lo, hi in zip(cut[:-2], cut[1:-1], strict=True):
        pa, pb = a[:, lo:hi] @ a[:, lo:hi].T, b[:, lo:hi] @ b[:, lo:hi].T
        assert torch.linalg.matrix_norm(pa - pb) <= rtol * (hi - lo) ** 0.5, (lo, hi)


def model_and_data(device):
    model = ModMLP(13, 64, torch.Generator().manual_seed(0)).to(device=device, dtype=DT)
    return model, modadd_inputs(13).to(device=device, dtype=DT)


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


def test_kernels_products_and_eigenpairs_match_the_cpu():
    cpu, gpu = model_and_data("cpu"), model_and_data("cuda")
    for outputs in ("flatten", "diag_mean"):
        k_cpu = entk.NTK(*cpu, outputs=outputs).kernel().dense()
        k_gpu = entk.NTK(*gpu, outputs=outputs).kernel().dense()
        assert k_gpu.device.type == "cuda"
        assert torch.allclose(k_gpu.cpu(), k_cpu, rtol=1e-10, atol=1e-12 * k_cpu.abs().max())
    u = torch.randn(sum(p.numel() for p in cpu[0].parameters()), 5, dtype=DT)
    assert torch.allclose(param_matvec(products(*gpu))(u.cuda()).cpu(), param_matvec(products(*cpu))(u), rtol=1e-10)
    # P = 2496 > C·N = 2197 here, so the compact kernel is dense and "gram" does not apply.
    for method in ("dense", "matrix_free"):
        v_cpu, vec_cpu = entk.NTK(*cpu).eigenpairs(10, method=method)
        v_gpu, vec_gpu = entk.NTK(*gpu).eigenpairs(10, method=method)
        assert vec_gpu.device.type == "cuda"
        assert torch.allclose(v_gpu.cpu(), v_cpu, rtol=1e-8)
        assert_same_eigenvectors(v_cpu, vec_cpu, vec_gpu)


def test_shared_weights_on_the_structured_path_match_the_cpu():
    """TMS (W used as Wᵀ and W) on the structured path, computed on CUDA through ``device=``."""
    from entk.kinds.models import TMS, tms_data

    gen = torch.Generator().manual_seed(0)
    model = TMS(20, 5, generator=gen).to(DT)
    x = tms_data(30, 20, 0.7, gen).to(DT)
    w = torch.linspace(0.5, 1.5, 20, dtype=DT)
    for outputs in ("flatten", "diag_mean", "all_mean"):
        on_gpu = entk.NTK(model, x, outputs=outputs, output_weights=w, device="cuda")
        assert on_gpu.paths == {"W": "structured", "b": "structured"}
        k_gpu = on_gpu.kernel().dense()
        k_cpu = entk.NTK(model, x, outputs=outputs, output_weights=w).kernel().dense()
        assert k_gpu.device.type == "cuda" and next(model.parameters()).device.type == "cpu"
        assert torch.allclose(k_gpu.cpu(), k_cpu, rtol=1e-10, atol=1e-12 * k_cpu.abs().max())


def test_view_eigenpairs_of_the_transformer_match_the_cpu():
    """The workflow's eigen stage (per-tensor all_mean kernels of a small Transformer) on CUDA."""
    from entk.kinds import modadd_transformer
    from entk.pipeline import runner

    settings = {"p": 7, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32}
    out = {}
    for device in ("cpu", "cuda"):
        model = modadd_transformer.build(settings, torch.Generator().manual_seed(0)).to(device=device, dtype=DT)
        x = modadd_transformer.inputs(settings).to(device)
        groups = runner.view_groups(model, "per_tensor")
        out[device] = runner.view_eigenpairs(model, x, groups, "all_mean", None, 10, None)
    for name, (vals, vecs) in out["cpu"].items():
        assert torch.allclose(out["cuda"][name][0].cpu(), vals, rtol=1e-8, atol=1e-12 * vals.abs().max()), name
        assert_same_eigenvectors(vals, vecs, out["cuda"][name][1])


def test_language_model_module_eigen_matches_the_cpu():
    """One module's K = S^½ J Jᵀ S^½ of a tiny story LM: the eigen job's arrays on CUDA as on the CPU."""
    from entk.kinds import story_lm
    from entk.kinds.registry import get_kind
    from entk.pipeline import lm_views

    s = get_kind("story_lm").with_defaults(
        {"d_model": 8, "n_layers": 2, "n_heads": 2, "d_mlp": 16, "context_length": 6}
    )
    ids = torch.randint(3, len(story_lm.vocabulary()), (6, 5), generator=torch.Generator().manual_seed(2))
    out = {}
    for device in ("cpu", "cuda"):
        model = story_lm.seeded_build(s, torch.Generator().manual_seed(1)).double().eval().to(device)
        metric = lm_views.output_metric(model, "unembedding").to(device)
        out[device] = lm_views.module_eigen(
            model, ids.to(device), "mlp_out.1", metric, position=-1, top_k=4, lanczos_steps=24,
            max_memory_gb=None, log=lambda m: None,
        )  # fmt: skip
    for key in ("values", "lanczos_values"):
        assert out["cuda"][key] == pytest.approx(out["cpu"][key], rel=1e-6)
    assert lm_views.subspace_overlap(out["cuda"]["vectors"], out["cpu"]["vectors"].astype(float)) == pytest.approx(
        1, abs=1e-4
    )
