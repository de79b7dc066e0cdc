"""Matrix-free eNTK products and eigensolver against dense brute force; method choice; warnings."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import entk
from entk import top_eigenpairs
from entk.core.eigen import EigenInfo, choose_method, kernel_eigenpairs
from entk.core.matfree import SUB_BLOCK, factor_matvec, ntk_matvec, param_matvec, products
from entk.core.solvers import top_eigenpairs_matfree
from entk.kinds.models import TMS
from entk.lm import lanczos, lanczos_run

DT = torch.float64


def dense_factor(model, x, names, outputs, weights):
    """The eNTK's factor F with K = F Fᵀ from the full-batch Jacobian by ``jacrev`` (independent of entk)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, {**params, **p}, (x,)))({k: params[k] for k in names})
    j = torch.cat([jac[k].flatten(2) for k in names], dim=2)  # (N, C, P)
    j = j * weights[None, :, None]
    if outputs == "flatten":
        return j.transpose(0, 1).reshape(-1, j.shape[2])
    if outputs == "diag_mean":
        return j.reshape(j.shape[0], -1) / j.shape[1] ** 0.5
    return j.mean(1)


def dense_ntk(model, x, names, outputs, weights):
    """Dense eNTK F Fᵀ."""
    f = dense_factor(model, x, names, outputs, weights)
    return f @ f.T


def mlp():
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def conv_net():
    return nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Softplus(), nn.Flatten(), nn.Linear(8, 3))


def make_cases():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return {
        "mlp_tanh_bias": (mlp().to(DT), torch.randn(6, 5, generator=g, dtype=DT), ["0.weight", "2.bias"]),
        "tms": (TMS(6, 3, generator=g).to(DT), torch.rand(7, 6, generator=g, dtype=DT), ["W"]),
        "conv": (conv_net().to(DT), torch.randn(5, 6, generator=g, dtype=DT), ["1.weight", "4.weight"]),
    }


CASES = make_cases()


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def projector_gap(a, b):
    """‖A Aᵀ − B Bᵀ‖ for orthonormal bases: zero iff they span the same subspace."""
    return float((a @ a.T - b @ b.T).norm())


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("outputs", entk.OUTPUT_MODES)
def test_matvec_equals_dense_kernel(case, outputs):
    model, x, subset = CASES[case]
    c = model(x).shape[1]
    weights = torch.linspace(0.4, 1.6, c, dtype=DT)
    all_names = [k for k, _ in model.named_parameters()]
    for names, w in [(all_names, torch.ones(c, dtype=DT)), (subset, weights)]:
        kernel = dense_ntk(model, x, names, outputs, w)
        v = torch.randn(kernel.shape[0], SUB_BLOCK + 2, dtype=DT)
        for budget in (1.0, 1e-9):  # one chunk of samples; one sample per chunk
            matvec = ntk_matvec(
                products(model, x, params=names, outputs=outputs, output_weights=w, max_memory_gb=budget)
            )
            assert rel_err(matvec(v), kernel @ v) <= 1e-12, (names, budget)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("outputs", ["flatten", "all_mean"])
def test_param_side_products_equal_dense_factor(case, outputs):
    model, x, subset = CASES[case]
    c = model(x).shape[1]
    w = torch.linspace(0.4, 1.6, c, dtype=DT)
    f = dense_factor(model, x, subset, outputs, w)
    u = torch.randn(f.shape[1], SUB_BLOCK + 3, dtype=DT)  # more than one sub-block
    for budget in (1.0, 1e-9):
        pb = products(model, x, params=subset, outputs=outputs, output_weights=w, max_memory_gb=budget)
        assert pb.n_params == f.shape[1]
        assert rel_err(param_matvec(pb)(u), f.T @ (f @ u)) <= 1e-12, budget
        assert rel_err(factor_matvec(pb)(u), f @ u) <= 1e-12, budget


def test_param_side_refuses_diag_mean():
    model, x, _ = CASES["mlp_tanh_bias"]
    for fn in (param_matvec, factor_matvec):
        with pytest.raises(ValueError, match="use ntk_matvec"):
            fn(products(model, x, outputs="diag_mean"))


def test_matvec_keeps_the_callers_dtype():
    model, x, _ = CASES["tms"]
    matvec = ntk_matvec(products(model, x, outputs="all_mean"))
    out = matvec(torch.randn(x.shape[0], 2, dtype=torch.float32))
    assert out.dtype == torch.float32 and out.shape == (x.shape[0], 2)


@pytest.mark.parametrize(
    "case,outputs,k", [("mlp_tanh_bias", "diag_mean", 4), ("tms", "flatten", 6), ("conv", "all_mean", 3)]
)
def test_matrix_free_top_k_matches_dense_eigh(case, outputs, k):
    model, x, _ = CASES[case]
    c = model(x).shape[1]
    w = torch.linspace(0.5, 1.5, c, dtype=DT)
    kernel = dense_ntk(model, x, [n for n, _ in model.named_parameters()], outputs, w)
    ref_vals, ref_vecs = torch.linalg.eigh(kernel)
    ref_vals, ref_vecs = ref_vals.flip(0)[:k], ref_vecs.flip(1)[:, :k]
    vals, vecs, info = top_eigenpairs(
        model, x, k, outputs=outputs, output_weights=w, method="matrix_free", return_info=True
    )
    assert info.method == "matrix_free" and info.solver.converged
    # TMS flattened: P = 24 < C·N = 42, so the solver ran on Fᵀ F; the others on K.
    assert info.solver.side == ("parameter" if case == "tms" else "kernel")
    assert rel_err(vals, ref_vals) <= 1e-8
    assert projector_gap(vecs, ref_vecs) <= 1e-5
    assert torch.allclose(vecs.T @ vecs, torch.eye(k, dtype=DT), atol=1e-10)
    assert torch.all(vecs[vecs.abs().argmax(0), torch.arange(k)] > 0)


def test_repeated_eigenvalues_of_an_output_layer_kernel_are_all_found():
    # Last layer only, no bias, 8 outputs: K = I_8 ⊗ A Aᵀ, so every eigenvalue has multiplicity 8.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 8, bias=False)).to(DT)
    x = torch.randn(12, 4, dtype=DT)
    kernel = dense_ntk(model, x, ["2.weight"], "flatten", torch.ones(8, dtype=DT))
    ref_vals, ref_vecs = torch.linalg.eigh(kernel)
    ref_vals, ref_vecs = ref_vals.flip(0), ref_vecs.flip(1)
    vals, vecs, info = top_eigenpairs(model, x, 16, params=["2"], method="matrix_free", return_info=True)
    assert info.solver.converged
    assert rel_err(vals, ref_vals[:16]) <= 1e-8
    assert torch.allclose(vals[:8], vals[0].expand(8), rtol=1e-10)
    assert torch.allclose(vals[8:], vals[8].expand(8), rtol=1e-10)
    assert vals[7] / vals[8] > 1.01  # two distinct eigenvalues, each exactly 8-fold
    assert projector_gap(vecs, ref_vecs[:, :16]) <= 1e-5


def test_planted_multiplicities_of_a_synthetic_operator():
    g = torch.Generator().manual_seed(2)
    lam = torch.cat([torch.full((6,), 4.0), torch.full((9,), 2.0), torch.linspace(1.0, 1e-3, 185)]).to(DT)
    q = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=DT))[0]
    op = (q * lam) @ q.T
    for k in (6, 15):
        vals, vecs, info = top_eigenpairs_matfree(lambda v: op @ v, 200, k)
        assert info.converged and info.max_residual <= 1e-6
        assert rel_err(vals, lam[:k]) <= 1e-10
        assert projector_gap(vecs, q[:, :k]) <= 1e-5
    # A cut inside the 9-fold cluster: the values are still exact.
    vals, _, _ = top_eigenpairs_matfree(lambda v: op @ v, 200, 10)
    assert rel_err(vals, lam[:10]) <= 1e-10


def test_a_start_of_eigenvectors_converges_at_once_and_a_rough_one_still_converges():
    g = torch.Generator().manual_seed(4)
    lam = torch.logspace(0, -4, 300, dtype=DT)
    q = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=DT))[0]
    op = (q * lam) @ q.T
    vals, vecs, info = top_eigenpairs_matfree(lambda v: op @ v, 300, 10, start=q[:, :10])
    assert info.converged and info.iterations == 1 and info.matvecs == info.block_size
    assert rel_err(vals, lam[:10]) <= 1e-10
    # Eigenvectors of a perturbed operator: the answer is still the operator's own, to tolerance.
    rough = q[:, :10] + 0.05 * torch.randn(300, 10, generator=g, dtype=DT)
    vals, vecs, info = top_eigenpairs_matfree(lambda v: op @ v, 300, 10, start=rough)
    assert info.converged and rel_err(vals, lam[:10]) <= 1e-10
    assert projector_gap(vecs, q[:, :10]) <= 1e-5


def test_a_start_of_lanczos_ritz_vectors_keeps_the_basis_orthonormal():
    # Lanczos Ritz vectors' residuals all lie along the next Lanczos vector: QR's division of such nearly
    # dependent columns by their small r_ii magnified what Gram-Schmidt left of the basis, Ritz values rose
    # above the operator's (Cauchy interlacing forbids it with an orthonormal basis) and the solver diverged.
    g = torch.Generator().manual_seed(0)
    f = torch.randn(400, 1000, generator=g, dtype=DT) * torch.logspace(0, -3, 1000, dtype=DT)
    op = f @ f.T
    lam = torch.linalg.eigvalsh(op).flip(0)
    _, start = lanczos(lambda v: op @ v, 400, steps=12, k=6, dtype=DT)
    vals, _, info = top_eigenpairs_matfree(lambda v: op @ v, 400, 6, start=start, max_iter=50)
    assert info.converged
    assert rel_err(vals, lam[:6]) <= 1e-10


def test_a_lanczos_basis_with_its_products_starts_the_solver_without_repeating_them():
    # A doubly repeated top eigenvalue: one-vector Lanczos holds one direction of its eigenspace, and only the
    # random guard vectors beside the basis can bring the other in.
    g = torch.Generator().manual_seed(5)
    lam = torch.cat([torch.tensor([3.0, 3.0, 2.5, 2.0, 1.8, 1.5]), torch.logspace(0, -4, 394)]).to(DT)
    q = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=DT))[0]
    op = (q * lam) @ q.T
    run = lanczos_run(lambda v: op @ v, 400, steps=20, k=6, dtype=DT)
    assert torch.allclose(run.images, op @ run.basis)
    calls = []

    def matvec(v):
        calls.append(v.shape[1])
        return op @ v

    vals, vecs, info = top_eigenpairs_matfree(matvec, 400, 6, start=run.basis, start_images=run.images)
    assert info.converged and rel_err(vals, lam[:6]) <= 1e-10
    assert projector_gap(vecs, q[:, :6]) <= 1e-5
    # The first products are the guards' (the block less the 6 wanted), none of the basis's.
    assert calls[0] == info.block_size - 6 and info.matvecs == sum(calls)
    # More start vectors than the basis holds: their top Ritz vectors in their span begin it.
    run = lanczos_run(lambda v: op @ v, 400, steps=60, k=6, dtype=DT)
    vals, _, info = top_eigenpairs_matfree(
        lambda v: op @ v, 400, 6, start=run.basis, start_images=run.images, max_basis=30
    )
    assert info.converged and rel_err(vals, lam[:6]) <= 1e-10


def test_bad_start_images_one_line():
    op = torch.diag(torch.linspace(1.0, 0.01, 80, dtype=DT))
    basis = torch.linalg.qr(torch.randn(80, 6, generator=torch.Generator().manual_seed(0), dtype=DT))[0]
    cases = [
        ({"start_images": op @ basis}, "without start"),
        ({"start": basis, "start_images": (op @ basis)[:, :5]}, "of start's shape"),
        ({"start": basis, "start_images": torch.full((80, 6), float("nan"), dtype=DT)}, "NaN"),
        ({"start": basis[:, [0, 0, 1]], "start_images": (op @ basis)[:, [0, 0, 1]]}, "linearly dependent"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            top_eigenpairs_matfree(lambda v: op @ v, 80, 5, **kwargs)


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (torch.ones(7, 2), r"\(dim, j\) = \(80, 1..13\)"),
        (torch.ones(80, 14), "1..13"),
        (torch.full((80, 2), float("nan")), "NaN"),
    ],
)
def test_bad_start_vectors_one_line(start, message):
    op = torch.diag(torch.linspace(1.0, 0.01, 80, dtype=DT))
    with pytest.raises(ValueError, match=message):
        top_eigenpairs_matfree(lambda v: op @ v, 80, 5, start=start.to(DT))


def test_solver_is_deterministic_for_a_seed():
    op = torch.diag(torch.linspace(1.0, 0.01, 80, dtype=DT))
    a = top_eigenpairs_matfree(lambda v: op @ v, 80, 5, seed=3)
    b = top_eigenpairs_matfree(lambda v: op @ v, 80, 5, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_non_convergence_warns_with_advice():
    op = torch.diag(torch.linspace(1.0, 0.01, 100, dtype=DT))
    with pytest.warns(RuntimeWarning, match=r"did not converge: \d+ of the top 5 .* Raise max_iter .*method='dense'"):
        _, _, info = top_eigenpairs_matfree(lambda v: op @ v, 100, 5, max_iter=1)
    assert not info.converged and info.iterations == 1 and info.max_residual > 1e-6


def test_all_methods_agree_on_a_factor_kernel():
    model, x, _ = CASES["tms"]
    kernel = entk.compact_ntk(model, x)
    assert kernel.kind == "factor"
    results = {m: kernel_eigenpairs(kernel, 5, method=m, return_info=True) for m in ("gram", "dense", "matrix_free")}
    for method, (vals, vecs, info) in results.items():
        assert info.method == method
        assert rel_err(vals, results["dense"][0]) <= 1e-8
        assert projector_gap(vecs, results["dense"][1]) <= 1e-5
    with pytest.raises(ValueError, match="method='gram' needs a factor"):
        kernel_eigenpairs(entk.Kernel("dense", kernel.dense(), 7, 6, "flatten"), 5, method="gram")


def test_auto_picks_gram_then_dense_then_matrix_free_as_the_budget_shrinks():
    assert choose_method({"gram": 1.0, "dense": 2.0, "matrix_free": 0.5}, 4.0) == "gram"
    assert choose_method({"gram": float("inf"), "dense": 2.0, "matrix_free": 0.5}, 4.0) == "dense"
    assert choose_method({"gram": 1.0, "dense": 2.0, "matrix_free": 0.5}, 0.9) == "matrix_free"
    with pytest.warns(UserWarning, match="even the matrix-free"):
        assert choose_method({"gram": 1.0, "dense": 2.0, "matrix_free": 0.5}, 0.1) == "matrix_free"
    # TMS, flatten: the factor (C·N, P) = (42, 24) is narrow, so gram until it no longer fits.
    model, x, _ = CASES["tms"]
    _, _, info = top_eigenpairs(model, x, 5, return_info=True, max_memory_gb=1.0)
    est = info.estimates_gb
    assert info.method == "gram" and est["gram"] < est["dense"]
    with pytest.warns(UserWarning, match="even the matrix-free"):  # a budget this tiny fits no method
        _, _, info = top_eigenpairs(model, x, 5, return_info=True, max_memory_gb=0.5 * est["gram"])
    assert info.method == "matrix_free" and info.solver.converged
    # diag_mean of the MLP: the factor (N, C·P) is wider than N, so dense until it no longer fits.
    model, x, _ = CASES["mlp_tanh_bias"]
    _, _, info = top_eigenpairs(model, x, 3, outputs="diag_mean", return_info=True)
    assert info.method == "dense" and info.estimates_gb["gram"] == float("inf")
    with pytest.warns(UserWarning, match="even the matrix-free"):
        _, _, info = top_eigenpairs(
            model, x, 3, outputs="diag_mean", return_info=True, max_memory_gb=0.5 * info.estimates_gb["dense"]
        )
    assert info.method == "matrix_free"


def test_auto_weighs_flops_once_the_kernel_is_built():
    costs = {"gram": 5.0, "dense": 3.0, "matrix_free": 1.0}
    assert choose_method({"gram": 1.0, "dense": 2.0, "matrix_free": 0.5}, 4.0, costs) == "matrix_free"
    assert choose_method({"gram": 1.0, "dense": 2.0, "matrix_free": 9.0}, 4.0, costs) == "dense"
    # A planted spectrum: few wanted eigenpairs of a large dense kernel go to the block solver,
    # many of a small one to eigh; both agree with eigh on the same matrix.
    g = torch.Generator().manual_seed(1)
    for dim, k, expected in [(1500, 4, "matrix_free"), (120, 60, "dense")]:
        q = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=DT))[0]
        lam = 0.8 ** torch.arange(dim, dtype=DT)
        kernel = entk.Kernel("dense", (q * lam) @ q.T, dim, 1, "all_mean")
        vals, vecs, info = kernel_eigenpairs(kernel, k, return_info=True)
        assert info.method == expected
        assert rel_err(vals, lam[:k]) <= 1e-8
        assert projector_gap(vecs, q[:, :k]) <= 1e-5


def test_default_return_type_and_budget_from_the_environment(monkeypatch):
    model, x, _ = CASES["tms"]
    out = top_eigenpairs(model, x, 3)
    assert isinstance(out, tuple) and len(out) == 2
    monkeypatch.setenv("ENTK_MAX_MEMORY_GB", "1e-12")
    with pytest.warns(UserWarning):
        *_, info = top_eigenpairs(model, x, 3, return_info=True)
    assert isinstance(info, EigenInfo) and info.method == "matrix_free"


def test_bad_method_and_budget_are_named():
    model, x, _ = CASES["tms"]
    with pytest.raises(
        ValueError, match=r"unknown method 'lanczos'; choose one of \('auto', 'gram', 'dense', 'matrix_free'\)"
    ):
        top_eigenpairs(model, x, 3, method="lanczos")
    with pytest.raises(ValueError, match="unknown method"):
        kernel_eigenpairs(entk.compact_ntk(model, x), 3, method="eigsh")
    with pytest.raises(ValueError, match="max_memory_gb must be positive"):
        top_eigenpairs(model, x, 3, max_memory_gb=0)


def test_one_memory_rule_for_kernels_products_and_solver(monkeypatch):
    model, x, _ = CASES["mlp_tanh_bias"]
    expected = entk.compact_ntk(model, x).dense()
    v = torch.randn(expected.shape[0], 3, dtype=DT)
    # A tiny budget from the environment reaches the kernel builder and the products alike:
    # one sample per chunk, same numbers.
    monkeypatch.setenv("ENTK_MAX_MEMORY_GB", "1e-9")
    assert rel_err(entk.compact_ntk(model, x).dense(), expected) <= 1e-12
    assert rel_err(ntk_matvec(products(model, x))(v), expected @ v) <= 1e-12
    monkeypatch.setenv("ENTK_MAX_MEMORY_GB", "0")
    for call in (
        lambda: entk.compact_ntk(model, x),
        lambda: ntk_matvec(products(model, x)),
        lambda: top_eigenpairs(model, x, 2),
    ):
        with pytest.raises(ValueError, match="max_memory_gb must be positive"):
            call()


@pytest.mark.parametrize("method", ["auto", "gram", "dense", "matrix_free"])
def test_zero_rows_of_a_factor_are_left_out_and_put_back(method):
    # A factor with exactly zero rows (outputs behind a ReLU that is off): the eigenpairs solved on
    # the other rows must be those of the whole kernel, with the eigenvectors zero on those rows.
    g = torch.Generator().manual_seed(3)
    f = torch.randn(60, 12, generator=g, dtype=DT) * (0.7 ** torch.arange(12, dtype=DT))
    zero = torch.zeros(60, dtype=torch.bool)
    zero[torch.randperm(60, generator=g)[:45]] = True
    f[zero] = 0.0
    kernel = entk.Kernel("factor", f, 60, 1, "all_mean")
    lam, vec = torch.linalg.eigh(f @ f.T)
    lam, vec = lam.flip(0), vec.flip(1)
    for k in (5, 12, 15):  # 15 = every kept row: the last three eigenvalues are zero
        vals, vecs = kernel_eigenpairs(kernel, k, method="dense" if k > 12 and method == "gram" else method)
        assert vecs.shape == (60, k)
        top = min(k, 12)
        assert rel_err(vals[:top], lam[:top]) <= 1e-8
        assert (vals[top:].abs() <= 1e-8 * lam[0]).all()
        assert projector_gap(vecs[:, :top], vec[:, :top]) <= 1e-5
        assert vecs[zero, :top].abs().max() == 0.0
    # More wanted than kept rows: the null space has to come from the full kernel.
    vals, vecs = kernel_eigenpairs(kernel, 20, method="dense")
    assert vecs.shape == (60, 20) and torch.allclose(vecs.T @ vecs, torch.eye(20, dtype=DT), atol=1e-10)
