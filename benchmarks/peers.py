"""Benchmark (not a test): entk against its peers, side by side, on the paper's three models.

Peers: neural-tangents 0.6.5 (the models rewritten as pure jax functions on the same float64
weights; each of its three ``empirical_ntk_fn`` implementations), nngeometry 0.4 (its Gram/NTK
machinery on the torch models, where it can run at all), and the reference (the paper's method,
written here independently of entk: per-sample Jacobian by ``torch.func.vmap(jacrev)``, dense
contraction, a dense eigensolver where the case asks for eigenvalues).

Cases, all float64:

a. ModMLP(29, 512) after 200 AdamW steps, all 841 inputs: diag_mean kernels (841²) full, fc1, fc2.
b. TMS n = 50, m = 10 (W used twice), 5000 Adam steps, N = 200, output weights w_c = I_c^(1/2)
   (β = 1): (b1) the dense flattened kernel (10000², class-major), (b2) its top-80 eigenvalues.
c. The 1-layer Transformer (p = 29, d_model 64, 4 heads, d_mlp 256) at a seeded init, all 841
   token inputs: one all_mean kernel (841²) per parameter tensor (9).

The driver prepares the weights and inputs once in a temporary directory, then runs every
(case, method) in its own fresh process of this interpreter, one after another. A child times
only the computation (neural-tangents: the first call, compile included, and the second call
apart), reads its peak RSS (VmHWM, reset through /proc/self/clear_refs after its setup) and
writes its result arrays; the driver then computes max|K − K_ref| / max|K_ref| against the
reference and prints one markdown table. Where a method would take far longer than the rest of
the run it is timed on a block of sample pairs and projected to all pairs, and the table says so.

Run from the repository root, after ``bash benchmarks/peers_env.sh`` (≈ 9 min on 2 cores):

    benchmarks/.peers-venv/bin/python benchmarks/peers.py | tee /tmp/peers_out.txt
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
# One thread setting for every library in every process (the machine has 2 cores).
THREAD_ENV = {
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "OPENBLAS_NUM_THREADS": str(THREADS),
    "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS}",
    "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
os.environ.update(THREAD_ENV)
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402  (after the thread environment)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tms_bench import _loadavg, _status_kib  # noqa: E402
from tms_bench import _reset_peak_rss as _reset_peak  # noqa: E402

GiB = 2**30
SEED = 0
P_MOD, HIDDEN = 29, 512
TMS_N, TMS_FEATURES, TMS_HIDDEN, TMS_SPARSITY, TMS_BASE = 200, 50, 10, 0.9, 0.9
TOP_K = 80
TF_SETTINGS = {"p": 29, "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256}
TENSORS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U")
NT_IMPLS = ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES")
NT_SHORT = {"JACOBIAN_CONTRACTION": "JC", "NTK_VECTOR_PRODUCTS": "VP", "STRUCTURED_DERIVATIVES": "SD"}


# ---------------------------------------------------------------------------- process helpers


def _mem_available() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GiB
    return float("nan")


class Clock:
    """Peak-RSS reset and timer around the measured computation of a child."""

    def __init__(self):
        self.reset_ok = None
        self.t0 = self.c0 = None

    def start(self) -> None:
        self.reset_ok = _reset_peak()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def lap(self) -> float:
        return time.perf_counter() - self.t0

    def cores(self) -> float | None:
        """CPU seconds of all this process's threads over wall seconds since start (2 = both cores)."""
        if self.t0 is None:
            return None
        return (time.process_time() - self.c0) / max(time.perf_counter() - self.t0, 1e-9)


# ---------------------------------------------------------------------------- models, data, weights


def _mlp_model():
    from entk.kinds.models import ModMLP

    return ModMLP(P_MOD, HIDDEN).double()


def _tms_model():
    from entk.kinds.models import TMS

    return TMS(TMS_FEATURES, TMS_HIDDEN).double()


def _tf_model():
    from entk.kinds.transformer import Transformer

    s = TF_SETTINGS
    return Transformer(s["p"], s["d_model"], s["n_heads"], s["d_head"], s["d_mlp"]).double()


def _tf_tokens() -> torch.Tensor:
    try:
        from entk.kinds.transformer import sequences

        return sequences(TF_SETTINGS["p"])
    except Exception:  # the same rows, should that helper move: (a, b, '=') for row a·p + b
        p = TF_SETTINGS["p"]
        a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        return torch.stack([a.reshape(-1), b.reshape(-1), torch.full((p * p,), p)], dim=1)


def prepare(d: Path, mlp_steps: int, tms_steps: int) -> dict:
    """Train / draw the three models once and write weights (.pt, .npz) and inputs (.npz) to ``d``."""
    from entk.kinds.models import TMS, ModMLP, modadd_inputs, modadd_labels, tms_data
    from entk.kinds.transformer import Transformer

    info = {}
    torch.set_num_threads(THREADS)
    # a. ModMLP: seeded init, 70 % split, full-batch AdamW on MSE vs one-hot (the workflow's recipe).
    gen = torch.Generator().manual_seed(SEED)
    model = ModMLP(P_MOD, HIDDEN, generator=gen).double()
    x, y = modadd_inputs(P_MOD).double(), modadd_labels(P_MOD)
    perm = torch.randperm(P_MOD**2, generator=gen)
    train = perm[: round(0.7 * P_MOD**2)]
    target = torch.nn.functional.one_hot(y, P_MOD).double()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(mlp_steps):
        loss = ((model(x[train]) - target[train]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(x)
    test = perm[round(0.7 * P_MOD**2) :]
    info["mlp"] = (
        f"ModMLP({P_MOD}, {HIDDEN}) seed {SEED}, {mlp_steps} AdamW steps (lr 0.05, wd 0.01) on 70 %: "
        f"train MSE {((out[train] - target[train]) ** 2).mean():.3e}, "
        f"train acc {(out[train].argmax(1) == y[train]).double().mean():.3f}, "
        f"test acc {(out[test].argmax(1) == y[test]).double().mean():.3f}"
    )
    torch.save(model.state_dict(), d / "mlp.pt")
    np.savez(
        d / "mlp.npz",
        x=x.numpy(),
        w1=model.fc1.weight.detach().numpy(),
        w2=model.fc2.weight.detach().numpy(),
        f=out.numpy(),
    )

    # b. TMS: the recipe's data-then-init order, importance 0.9^i, importance-weighted MSE, Adam.
    gen = torch.Generator().manual_seed(SEED)
    x = tms_data(TMS_N, TMS_FEATURES, TMS_SPARSITY, gen).double()
    model = TMS(TMS_FEATURES, TMS_HIDDEN, generator=gen).double()
    importance = TMS_BASE ** torch.arange(TMS_FEATURES, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(tms_steps):
        loss = (importance * (x - model(x)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(x)
    w = importance.sqrt()
    w_cols = model.W.detach()
    active = int((out > 0).sum())
    info["tms"] = (
        f"TMS n={TMS_FEATURES} m={TMS_HIDDEN}, N={TMS_N} points at S={TMS_SPARSITY}, {tms_steps} Adam steps "
        f"(lr 1e-3, importance {TMS_BASE}^i): loss {loss.item():.3e}, features with ‖W_i‖² ≥ 0.75: "
        f"{int(((w_cols**2).sum(0) >= 0.75).sum())}; nonzero outputs {active} of {out.numel()}"
    )
    info["tms_active"] = active
    torch.save(model.state_dict(), d / "tms.pt")
    np.savez(
        d / "tms.npz", x=x.numpy(), W=model.W.detach().numpy(), b=model.b.detach().numpy(), w=w.numpy(), f=out.numpy()
    )

    # c. Transformer at a seeded init.
    gen = torch.Generator().manual_seed(SEED)
    s = TF_SETTINGS
    model = Transformer(s["p"], s["d_model"], s["n_heads"], s["d_head"], s["d_mlp"], generator=gen).double()
    tokens = _tf_tokens()
    with torch.no_grad():
        out = model(tokens)
    names = [n for n, _ in model.named_parameters()]
    info["tf"] = (
        f"Transformer {s} at init (seed {SEED}), {tokens.shape[0]} token rows {tuple(tokens.shape)}, outputs "
        f"{tuple(out.shape)}; tensors {names}, {sum(p.numel() for p in model.parameters())} parameters"
    )
    torch.save(model.state_dict(), d / "tf.pt")
    np.savez(
        d / "tf.npz",
        tokens=tokens.numpy(),
        f=out.numpy(),
        **{n: p.detach().numpy() for n, p in model.named_parameters()},
    )
    return info


def _load_torch(d: Path, case: str):
    case = "tms" if case == "tms_top" else case
    model = {"mlp": _mlp_model, "tms": _tms_model, "tf": _tf_model}[case]()
    model.load_state_dict(torch.load(d / f"{case}.pt"))
    data = np.load(d / f"{case}.npz")
    return model, data


# ---------------------------------------------------------------------------- entk (one function per case)


def entk_mlp(model, x) -> dict[str, torch.Tensor]:
    """Case a: diag_mean kernels {full, fc1, fc2}, dense (N, N), from one NTK object."""
    import entk

    ntk = entk.NTK(model, x, outputs="diag_mean", groups={"fc1": ["fc1.weight"], "fc2": ["fc2.weight"]})
    return {"full": ntk.kernel().dense(), **{g: k.dense() for g, k in ntk.layers().items()}}


def entk_tms_dense(model, x, w) -> torch.Tensor:
    """Case b1: the dense flattened kernel (C·N, C·N), class-major, outputs weighted by w."""
    import entk

    return entk.NTK(model, x, outputs="flatten", output_weights=w).kernel().dense()


def entk_tms_top(model, x, w, k: int) -> torch.Tensor:
    """Case b2: the top-k eigenvalues (descending) of the b1 kernel."""
    import entk

    return entk.NTK(model, x, outputs="flatten", output_weights=w).eigenpairs(k)[0]


def entk_transformer(model, tokens) -> dict[str, torch.Tensor]:
    """Case c: one all_mean kernel (N, N) per parameter tensor."""
    import entk

    layers = entk.NTK(model, tokens, outputs="all_mean", groups="per_tensor").layers()
    return {name: kernel.dense() for name, kernel in layers.items()}


def run_entk(case: str, d: Path, clock: Clock, extra: dict) -> dict:
    """entk's case, called twice in this process: the time is the second call and the first is
    reported beside it, as for neural-tangents (whose first call compiles)."""
    import entk.core.ntk  # noqa: F401 (the library's modules load before the clock, as every peer's do)

    model, data = _load_torch(d, case)
    notes = ["API: entk.NTK"]
    if case == "mlp":
        x = torch.from_numpy(data["x"])

        def compute():
            return {k: v.detach().numpy() for k, v in entk_mlp(model, x).items()}

    elif case in ("tms", "tms_top"):
        x, w = torch.from_numpy(data["x"]), torch.from_numpy(data["w"])
        notes.append("time includes .dense()" if case == "tms" else "eigenpairs (values and vectors)")

        def compute():
            if case == "tms":
                return {"K": entk_tms_dense(model, x, w).detach().numpy()}
            return {"vals": entk_tms_top(model, x, w, TOP_K).detach().numpy()}

    else:
        tokens = torch.from_numpy(data["tokens"])

        def compute():
            return {k: v.detach().numpy() for k, v in entk_transformer(model, tokens).items()}

    clock.start()
    compute()
    first = clock.lap()
    clock.start()
    arrays = compute()
    return {"time": clock.lap(), "first": first, "arrays": arrays, "notes": notes}


# ---------------------------------------------------------------------------- the reference (paper's method)


def _per_sample_jacobian(model, x, names: list[str], chunk: int, mean: bool = False) -> torch.Tensor:
    """(N, C, P) per-sample Jacobian of the outputs w.r.t. ``names`` by vmap(jacrev), chunked over samples;
    with ``mean`` the class mean (N, P) of each chunk's full (chunk, C, P) Jacobian."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_one(sel, x1):
        return functional_call(model, {**params, **sel}, (x1.unsqueeze(0),)).squeeze(0)

    sel = {k: params[k] for k in names}
    parts = []
    for start in range(0, x.shape[0], chunk):
        jac = vmap(jacrev(f_one), in_dims=(None, 0))(sel, x[start : start + chunk])
        j = torch.cat([jac[k].flatten(2) for k in names], dim=2)
        parts.append(j.mean(1) if mean else j)
        del jac, j
    return torch.cat(parts)


def run_reference(case: str, d: Path, clock: Clock, extra: dict) -> dict:
    model, data = _load_torch(d, case)
    notes = []
    if case == "mlp":
        x = torch.from_numpy(data["x"])
        clock.start()
        arrays = {}
        for layer in ("fc1", "fc2"):
            jn = _per_sample_jacobian(model, x, [f"{layer}.weight"], chunk=256)  # (N, C, P)
            n, c, p = jn.shape
            flat = jn.reshape(n, c * p)
            arrays[layer] = flat @ flat.T / c  # (1/C) Σ_c J_c J_cᵀ
            del jn, flat
        arrays["full"] = arrays["fc1"] + arrays["fc2"]
        t = clock.lap()
        notes.append("per layer: J (N, C, P) by vmap(jacrev), K = (1/C) Σ_c J_c J_cᵀ; full = sum")
    elif case in ("tms", "tms_top"):
        x, w = torch.from_numpy(data["x"]), torch.from_numpy(data["w"])
        clock.start()
        jn = _per_sample_jacobian(model, x, [n for n, _ in model.named_parameters()], chunk=TMS_N)
        n, c, p = jn.shape
        big = (w[None, :, None] * jn).transpose(0, 1).reshape(c * n, p)  # row c·N + n
        kernel = big @ big.T
        del jn, big
        if case == "tms":
            arrays = {"K": kernel.numpy()}
        else:
            vals = torch.linalg.eigvalsh(kernel)
            arrays = {"vals": vals.flip(0)[:TOP_K].numpy()}
            notes.append("dense torch.linalg.eigvalsh (MKL; values only, top 80 kept)")
        t = clock.lap()
    else:
        tokens = torch.from_numpy(data["tokens"])
        names = [n for n, _ in model.named_parameters()]
        sizes = {n: p.numel() for n, p in model.named_parameters()}
        clock.start()
        jm = _per_sample_jacobian(model, tokens, names, chunk=64, mean=True)  # (N, P): class mean of J
        arrays, start = {}, 0
        for name in names:
            block = jm[:, start : start + sizes[name]]
            arrays[name] = block @ block.T
            start += sizes[name]
        t = clock.lap()
        notes.append("full J (N, C, P) by vmap(jacrev) in chunks of 64, class mean, K_t = J̄_t J̄_tᵀ")
    return {"time": t, "arrays": {k: np.asarray(v) for k, v in arrays.items()}, "notes": notes}


# ---------------------------------------------------------------------------- neural-tangents


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt

    return jax, jnp, nt


def _jax_models(case: str, data):
    """(apply(params, x), params dict, x) for the pure-jax rewrite of a case's model, same weights."""
    jax, jnp, _ = _jax()
    if case == "mlp":
        scale = 1.0 / (2 * P_MOD * HIDDEN)

        def apply(p, x):
            h = x @ p["w1"].T
            return (h * h) @ p["w2"].T * scale

        return apply, {"w1": jnp.asarray(data["w1"]), "w2": jnp.asarray(data["w2"])}, jnp.asarray(data["x"])
    if case in ("tms", "tms_top"):
        wout = jnp.asarray(data["w"])

        def apply(p, x):  # f·w: its NTK is D K D with D = diag(w) on the class axis
            return jax.nn.relu(x @ p["W"].T @ p["W"] + p["b"]) * wout

        return apply, {"W": jnp.asarray(data["W"]), "b": jnp.asarray(data["b"])}, jnp.asarray(data["x"])
    s = TF_SETTINGS
    h, dh = s["n_heads"], s["d_head"]

    def apply(p, tok):  # the hand-written attention of entk.kinds.transformer.Transformer, last position only
        n, t = tok.shape
        x = p["W_E"][tok] + p["W_pos"][:t]
        last = x[:, -1]
        q = (last @ p["W_Q"].reshape(h * dh, -1).T).reshape(n, h, 1, dh)
        k = (x @ p["W_K"].reshape(h * dh, -1).T).reshape(n, t, h, dh).transpose(0, 2, 1, 3)
        v = (x @ p["W_V"].reshape(h * dh, -1).T).reshape(n, t, h, dh).transpose(0, 2, 1, 3)
        attn = jax.nn.softmax((q @ k.transpose(0, 1, 3, 2)) / math.sqrt(dh), axis=-1)
        z = (attn @ v).reshape(n, h * dh)
        resid = last + z @ p["W_O"].T
        resid = resid + jax.nn.relu(resid @ p["W_in"]) @ p["W_out"]
        return resid @ p["W_U"]

    return apply, {n: jnp.asarray(data[n]) for n in TENSORS}, jnp.asarray(data["tokens"])


@dataclass
class NTPlan:
    """How one NT implementation runs on a case: ``probe`` (rows, cols) of sample pairs timed first and
    projected to all pairs; the full kernel only if allowed and the projection is under the cap;
    ``batch`` = nt.batch's batch_size for the full run (None: one call)."""

    probe: tuple[int, int] | None = None
    full: bool = True
    batch: int | None = None
    why: str = ""


# Sized from trial runs on this machine (2 cores, 23.5 GiB); see the module docstring.
NT_PLANS = {
    ("mlp", "JACOBIAN_CONTRACTION"): NTPlan(),
    ("mlp", "NTK_VECTOR_PRODUCTS"): NTPlan(
        probe=(8, 29),
        full=True,
        batch=29,
        why="vmaps a vjp+jvp over sample pairs × C² basis: memory ∝ pairs, "
        "so a full run would go through nt.batch(batch_size=29)",
    ),
    ("mlp", "STRUCTURED_DERIVATIVES"): NTPlan(),
    ("tms", "JACOBIAN_CONTRACTION"): NTPlan(),
    ("tms", "NTK_VECTOR_PRODUCTS"): NTPlan(batch=50, why="nt.batch(batch_size=50): memory ∝ pairs"),
    ("tms", "STRUCTURED_DERIVATIVES"): NTPlan(),
    ("tf", "JACOBIAN_CONTRACTION"): NTPlan(),
    ("tf", "NTK_VECTOR_PRODUCTS"): NTPlan(
        probe=(29, 29), full=True, batch=29, why="nt.batch(batch_size=29): memory ∝ pairs"
    ),
    ("tf", "STRUCTURED_DERIVATIVES"): NTPlan(),
}


def _nt_kernel_fns(case: str, impl: str, data):
    """{kernel name: (jitted ntk_fn(x1, x2, params), params)}, and x and the apply function."""
    jax, jnp, nt = _jax()
    apply, params, x = _jax_models(case, data)
    implementation = getattr(nt.NtkImplementation, impl)

    def make(f, trace_axes):
        return jax.jit(nt.empirical_ntk_fn(f, trace_axes=trace_axes, vmap_axes=0, implementation=implementation))

    fns = {}
    if case == "mlp":
        # NT's trace_axes=(-1,) already divides by the traced size C: it is diag_mean as it stands.
        fns["fc1"] = (make(lambda w, x: apply({"w1": w, "w2": params["w2"]}, x), (-1,)), params["w1"])
        fns["fc2"] = (make(lambda w, x: apply({"w1": params["w1"], "w2": w}, x), (-1,)), params["w2"])
    elif case in ("tms", "tms_top"):
        fns["K"] = (make(apply, ()), params)  # (N, N, C, C)
    else:
        for name in TENSORS:

            def g(w, x, name=name):  # the scalar mean output, as (N, 1); tracing a size-1 axis is exact
                return jnp.mean(apply({**params, name: w}, x), axis=-1, keepdims=True)

            fns[name] = (make(g, (-1,)), params[name])
    return fns, x, apply, params


def _nt_call(fns, x1, x2, batch: int | None):
    import neural_tangents as nt

    out = {}
    for name, (fn, p) in fns.items():
        call = fn if batch is None else nt.batch(fn, batch_size=batch, store_on_device=True)
        out[name] = call(x1, x2, p)
        out[name].block_until_ready()
    if "fc1" in out:  # the full MLP kernel is the sum of the per-layer ones
        out["full"] = (out["fc1"] + out["fc2"]).block_until_ready()
    return out


def run_nt(case: str, d: Path, clock: Clock, extra: dict) -> dict:
    jax, jnp, nt = _jax()
    impl = extra["impl"]
    data = np.load(d / f"{'tms' if case == 'tms_top' else case}.npz")
    fns, x, apply, params = _nt_kernel_fns(case, impl, data)
    plan = NT_PLANS[("tms" if case == "tms_top" else case, impl)]
    notes = [f"{impl}, vmap_axes=0"]
    if plan.why:
        notes.append(plan.why)
    ref_f = data["f"] * (data["w"] if case in ("tms", "tms_top") else 1)
    fx = np.asarray(apply(params, x))
    notes.append(f"jax forward vs torch: {np.abs(fx - ref_f).max() / np.abs(ref_f).max():.1e}")
    n = x.shape[0]
    cap = extra["cap"]
    clock.start()
    result = {"notes": notes}
    projected = None
    if plan.probe is not None:
        r, c = plan.probe
        t = time.perf_counter()
        _nt_call(fns, x[:r], x[:c], None)
        first = time.perf_counter() - t
        t = time.perf_counter()
        block = _nt_call(fns, x[:r], x[:c], None)
        second = time.perf_counter() - t
        projected = second * (n * n) / (r * c)
        notes.append(
            f"probe ({r}×{c} pairs): 1st call {first:.2f} s, 2nd {second:.3f} s → all pairs ≈ {projected:.1f} s"
        )
        result.update(
            time=projected,
            first=None,
            projected=True,
            block=(r, c),
            arrays={k: np.asarray(v) for k, v in block.items()},
        )
        if not plan.full:
            notes.append("full kernel not run (memory)")
        elif projected > cap:
            notes.append(f"full kernel not run: projection over the {cap:.0f} s cap")
    if plan.probe is None or (plan.full and projected is not None and projected <= cap):
        t = time.perf_counter()
        _nt_call(fns, x, None, plan.batch)
        first = time.perf_counter() - t
        t = time.perf_counter()
        out = _nt_call(fns, x, None, plan.batch)
        second = time.perf_counter() - t
        result.update(
            time=second, first=first, projected=False, block=None, arrays={k: np.asarray(v) for k, v in out.items()}
        )
    if case == "tms_top":
        # The b2 eigenvalues from the kernel: (N, N, C, C) → (N·C)² (a symmetric reordering keeps
        # the spectrum), then LAPACK's MRRR (dsyevr) for the top k only.
        import scipy.linalg

        t = time.perf_counter()
        k4 = result["arrays"]["K"]
        dim = k4.shape[0] * k4.shape[2]
        mat = np.ascontiguousarray(k4.transpose(0, 2, 1, 3)).reshape(dim, dim)
        del k4, result["arrays"]["K"]
        vals = scipy.linalg.eigh(
            mat, subset_by_index=[dim - TOP_K, dim - 1], driver="evr", overwrite_a=True, check_finite=False
        )[0]
        eig_s = time.perf_counter() - t
        kernel_s = result["time"]
        result["time"] = kernel_s + eig_s
        result["first"] = None if result["first"] is None else result["first"] + eig_s
        result["arrays"] = {"vals": vals[::-1].copy()}
        notes.append(f"kernel {kernel_s:.2f} s (2nd call) + reorder and scipy eigh(subset_by_index, evr) {eig_s:.1f} s")
    return result


# ---------------------------------------------------------------------------- nngeometry


class _UntiedTMS(torch.nn.Module):
    """TMS written with nn.Linear layers (all nngeometry knows): W copied into two separate layers."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor):
        super().__init__()
        m, n = W.shape
        self.enc = torch.nn.Linear(n, m, bias=False).double()
        self.dec = torch.nn.Linear(m, n, bias=True).double()
        with torch.no_grad():
            self.enc.weight.copy_(W)
            self.dec.weight.copy_(W.T)
            self.dec.bias.copy_(b)

    def forward(self, x):
        return torch.relu(self.dec(self.enc(x)))


def run_nngeometry(case: str, d: Path, clock: Clock, extra: dict) -> dict:
    from nngeometry import GramMatrix
    from nngeometry.layercollection import LayerCollection

    model, data = _load_torch(d, "tms" if case == "tms_top" else case)
    notes = []
    if case == "mlp":
        x = torch.from_numpy(data["x"])
        clock.start()
        arrays = {}
        for layer in ("fc1", "fc2"):
            lc = LayerCollection()
            lc.add_layer_from_model(model, getattr(model, layer))
            g = GramMatrix(model, (x,), layer_collection=lc).to_torch()  # (C, N, C, N)
            arrays[layer] = g.diagonal(dim1=0, dim2=2).mean(-1)  # (1/C) Σ_c K_cc
            del g
        arrays["full"] = arrays["fc1"] + arrays["fc2"]
        t = clock.lap()
        notes.append("GramMatrix per layer (full (C, N, C, N) Gram: C² backward passes), diag_mean taken from it")
        return {"time": t, "arrays": {k: v.numpy() for k, v in arrays.items()}, "notes": notes}
    if case in ("tms", "tms_top"):
        try:
            LayerCollection.from_model(model)
        except Exception as exc:
            notes.append(f"on entk's TMS: {type(exc).__name__}: {exc}".replace("\n", " "))
        x, w = torch.from_numpy(data["x"]), torch.from_numpy(data["w"])
        untied = _UntiedTMS(model.W.detach(), model.b.detach())
        notes.append(
            "ran on TMS rewritten as Linear(50→10) then Linear(10→50)+b with W copied into both: "
            "nngeometry treats them as separate parameters, so the W–Wᵀ cross terms are dropped"
        )
        clock.start()
        g = GramMatrix(untied, (x,), function=lambda xb: untied(xb) * w).to_torch()  # (C, N, C, N)
        c, n = g.shape[:2]
        kernel = g.reshape(c * n, c * n)  # already class-major: row c·N + n
        if case == "tms":
            arrays = {"K": kernel.numpy()}
        else:
            arrays = {"vals": torch.linalg.eigvalsh(kernel).flip(0)[:TOP_K].numpy()}
            notes.append("dense torch.linalg.eigvalsh of its kernel")
        t = clock.lap()
        return {"time": t, "arrays": arrays, "notes": notes}
    # Transformer: raw nn.Parameters and integer token inputs.
    errors = []
    try:
        LayerCollection.from_model(model)
    except Exception as exc:
        errors.append(f"LayerCollection.from_model: {type(exc).__name__}: {exc}".replace("\n", " "))
    try:
        lc = LayerCollection.from_model(model, ignore_unsupported_layers=True)
        errors.append(f"with ignore_unsupported_layers=True the collection has {lc.numel()} parameters")
        GramMatrix(model, (torch.from_numpy(data["tokens"]),), layer_collection=lc).to_torch()
    except Exception as exc:
        errors.append(f"GramMatrix on it: {type(exc).__name__}: {exc}".replace("\n", " "))
    return {"error": "cannot run: " + "; ".join(errors)}


# ---------------------------------------------------------------------------- calibration


def run_calibrate(case: str, d: Path, clock: Clock, extra: dict) -> dict:
    """float64 GEMM rate (4000² matmul, best of 3) and write bandwidth (fill of a 10000² array)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 4000, generator=g, dtype=torch.float64)
    b = torch.randn(4000, 4000, generator=g, dtype=torch.float64)
    a @ b
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    gemm = 2 * 4000**3 / best
    del a, b
    n = 10000 * 10000
    t = time.perf_counter()
    buf = torch.empty(n, dtype=torch.float64).fill_(1.0)
    first = time.perf_counter() - t
    warm = math.inf
    for _ in range(3):
        t = time.perf_counter()
        buf.fill_(2.0)
        warm = min(warm, time.perf_counter() - t)
    return {
        "time": best,
        "arrays": {},
        "gemm_flops": gemm,
        "bw_first": n * 8 / first,
        "bw_warm": n * 8 / warm,
        "notes": [
            f"GEMM 4000² float64 best of 3: {best:.3f} s = {gemm / 1e9:.1f} GFLOP/s; fill of 10000² "
            f"float64: first touch {first:.3f} s ({n * 8 / first / 1e9:.1f} GB/s), warm {warm:.3f} s "
            f"({n * 8 / warm / 1e9:.1f} GB/s)"
        ],
    }


# ---------------------------------------------------------------------------- tasks


@dataclass
class Task:
    name: str
    case: str
    method: str
    run: object
    extra: dict = field(default_factory=dict)


CASE_TITLE = {
    "mlp": "a. MLP p=29, diag_mean ×3 (841²)",
    "tms": "b1. TMS N=200, dense flatten (10000²)",
    "tms_top": "b2. TMS N=200, top-80 eigenvalues",
    "tf": "c. Transformer, all_mean per tensor ×9 (841²)",
}


def _tasks() -> list[Task]:
    tasks = [Task("calibrate", "calib", "calibrate", run_calibrate)]
    for case in ("mlp", "tms", "tms_top", "tf"):
        tasks.append(Task(f"{case}.entk", case, "entk", run_entk))
        tasks.append(Task(f"{case}.reference", case, "reference", run_reference))
        if case == "tms_top":
            tasks.append(Task(f"{case}.nt", case, "neural-tangents", run_nt))
        else:
            for impl in NT_IMPLS:
                tasks.append(
                    Task(
                        f"{case}.nt.{NT_SHORT[impl]}", case, f"neural-tangents {NT_SHORT[impl]}", run_nt, {"impl": impl}
                    )
                )
        tasks.append(Task(f"{case}.nngeometry", case, "nngeometry", run_nngeometry))
    return tasks


def child(task_name: str, d: Path, extra_json: str) -> None:
    torch.set_num_threads(THREADS)
    task = {t.name: t for t in _tasks()}[task_name]
    extra = {**task.extra, **json.loads(extra_json)}
    clock = Clock()
    try:
        res = task.run(task.case, d, clock, extra)
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {exc}".replace("\n", " "), "traceback": traceback.format_exc()}
    arrays = res.pop("arrays", {})
    if arrays:
        np.savez(d / f"{task_name}.npz", **arrays)
    res["peak_kib"] = _status_kib("VmHWM")
    res["reset_ok"] = clock.reset_ok
    res["cores"] = clock.cores()
    (d / f"{task_name}.json").write_text(json.dumps(res))


# ---------------------------------------------------------------------------- driver


def _machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        total = int(fh.readline().split()[1]) * 1024 / GiB
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{total:.1f} GiB"}


def _versions() -> str:
    from importlib.metadata import version

    names = ("torch", "numpy", "scipy", "jax", "jaxlib", "neural-tangents", "nngeometry", "tensorflow")
    return ", ".join(f"{n} {version(n)}" for n in names)


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src/entk"], capture_output=True, text=True
        )
    except OSError:
        return "git state unknown"
    changed = len(dirty.stdout.splitlines())
    return f"commit {head.stdout.strip()}" + (f" + {changed} uncommitted paths under src/entk" if changed else "")


def run_child(task: Task, d: Path, extra: dict, timeout: float, log) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        task.name,
        "--dir",
        str(d),
        "--extra",
        json.dumps(extra),
    ]
    start = time.perf_counter()
    with open(d / f"{task.name}.log", "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    wall = time.perf_counter() - start
    out_json = d / f"{task.name}.json"
    if rc is None:
        res = {"error": f"timed out after {timeout:.0f} s (killed)"}
    elif not out_json.exists():
        tail = (d / f"{task.name}.log").read_text()[-400:].replace("\n", " ")
        res = {"error": f"child exited with {rc}" + (" (SIGKILL: out of memory?)" if rc == -9 else "") + f": {tail}"}
    else:
        res = json.loads(out_json.read_text())
    res["child_wall"] = wall
    res["load_after"] = _loadavg()
    if "error" in res:
        status = "ERROR " + res["error"][:300]
    else:
        first = f" (1st call {res['first']:.2f} s)" if res.get("first") else ""
        proj = " PROJECTED" if res.get("projected") else ""
        status = f"{res['time']:.3f} s{first}{proj}, peak RSS {res['peak_kib'] / 2**20:.2f} GiB"
        if res.get("cores") is not None:
            status += f", {res['cores']:.2f} cores busy"
    log(
        f"  {task.name:<26} {status}   [process {wall:.0f} s, load {res['load_after']}, "
        f"MemAvailable {_mem_available():.1f} GiB]"
    )
    return res


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def _class_major(k4: np.ndarray) -> np.ndarray:
    """NT's (N, N, C, C) → (C·N, C·N), row c·N + n."""
    n, _, c, _ = k4.shape
    return k4.transpose(2, 0, 3, 1).reshape(c * n, c * n)


def errors(task: Task, res: dict, d: Path) -> dict[str, float]:
    """Per array: max|K − K_ref| / max|K_ref| against the reference (on the timed block if projected)."""
    if "error" in res or task.method == "reference" or not (d / f"{task.name}.npz").exists():
        return {}
    ref_path = d / f"{task.case}.reference.npz"
    if not ref_path.exists():
        return {}
    ref, got = np.load(ref_path), np.load(d / f"{task.name}.npz")
    out = {}
    for key in got.files:
        a, r = got[key], ref[key]
        if task.case == "tms" and a.ndim == 4:
            if res.get("block"):
                rr, cc = res["block"]
                n, c = TMS_N, TMS_FEATURES
                r = r.reshape(c, n, c, n).transpose(1, 3, 0, 2)[:rr, :cc]  # to NT's (N, N, C, C) block
            else:
                a = _class_major(a)
        elif res.get("block"):
            rr, cc = res["block"]
            r = r[:rr, :cc]
        out[key] = _rel_err(a, r)
    return out


def _fmt_s(s: float) -> str:
    return f"{s:,.2f} s" if s < 100 else f"{s:,.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", help="run only tasks whose name starts with one of these (debugging)")
    ap.add_argument("--mlp-steps", type=int, default=200)
    ap.add_argument("--tms-steps", type=int, default=5000)
    ap.add_argument(
        "--cap",
        type=float,
        default=120.0,
        help="a neural-tangents kernel projected (from its probe block) over this many seconds is not run in full",
    )
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds before a child is killed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.dir), args.extra)
        return

    def log(msg: str = "") -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    log("# entk against its peers: neural-tangents, nngeometry, the reference (vmap(jacrev) + contraction)")
    log(f"date        {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for k, v in _machine().items():
        log(f"{k:<11} {v}")
    log(f"python      {platform.python_version()} ({sys.executable})")
    log(f"versions    {_versions()}")
    import entk  # noqa: F401

    log(f"entk        {ROOT / 'src'} (PYTHONPATH); API used: entk.NTK; {_git_state()}")
    log(
        f"threads     {THREADS} everywhere: torch.set_num_threads({THREADS}); "
        + " ".join(f"{k}={v!r}" for k, v in THREAD_ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL")
    )
    log(
        f"openblas    OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r} "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '')!r} (left as this machine sets them; numpy/scipy)"
    )
    log(
        f"load        {_loadavg()} at start (the machine is shared: another engineer uses the same 2 cores); "
        f"MemAvailable {_mem_available():.1f} GiB"
    )

    d = Path(tempfile.mkdtemp(prefix="entk-peers-"))
    try:
        t = time.perf_counter()
        info = prepare(d, args.mlp_steps, args.tms_steps)
        log(f"prepared    in {time.perf_counter() - t:.1f} s, in {d}")
        for k in ("mlp", "tms", "tf"):
            log(f"  {k}: {info[k]}")
        log("")
        tasks = [t for t in _tasks() if not args.only or any(t.name.startswith(o) for o in args.only)]
        results: dict[str, dict] = {}
        for task in tasks:
            extra = {"cap": args.cap}
            if task.name == "tms_top.nt":
                # b2 runs neural-tangents with the implementation fastest on b1.
                b1 = [
                    (results[n]["time"], n)
                    for n in results
                    if n.startswith("tms.nt.") and "error" not in results[n] and not results[n].get("projected")
                ]
                short = min(b1)[1].rsplit(".", 1)[1] if b1 else "JC"
                extra["impl"] = {v: k for k, v in NT_SHORT.items()}[short]
                task.method = f"neural-tangents {short} + scipy eigh"
            results[task.name] = run_child(task, d, extra, args.timeout, log)
        log("")
        report(tasks, results, d, info, log)
    finally:
        if args.keep:
            log(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    log(f"\nwhole benchmark {time.perf_counter() - started:.0f} s; load at end {_loadavg()}")


def _limits(calib: dict, info: dict) -> dict[str, tuple[float, str]]:
    """Per case: a lower bound on time from flops at the measured GEMM rate and from bytes written at
    the measured (warm) write bandwidth, and how it was counted."""
    if not calib or "error" in calib:
        return {}
    rate, bw = calib["gemm_flops"], calib["bw_warm"]
    n = P_MOD**2
    out = {}

    def bound(flops: float, nbytes: float, how: str) -> tuple[float, str]:
        t_f, t_b = flops / rate, nbytes / bw
        return max(t_f, t_b), (
            f"{how}: {flops / 1e9:.2f} GFLOP → {t_f:.3f} s; {nbytes / 1e6:.0f} MB written → "
            f"{t_b:.3f} s (the kernel's assembly only: the passes that make its factors are "
            f"not counted)"
        )

    # a: K_fc1 = (X Xᵀ) ⊙ (H Hᵀ)/C with H of width 512 (x² feeds a linear readout: each hidden unit's
    # class gradients are rank 1), K_fc2 = A Aᵀ with A the 512 activations; symmetric → N²·r flops.
    out["mlp"] = bound(
        n * n * ((2 * P_MOD + HIDDEN) + HIDDEN),
        3 * n * n * 8,
        "fc1 Hadamard of Grams (58 + 512) + fc2 factor 512, ×N² (symmetric)",
    )
    dim, active, width = TMS_N * TMS_FEATURES, info["tms_active"], TMS_FEATURES * TMS_HIDDEN + TMS_FEATURES
    out["tms"] = bound(
        active * active * width, dim * dim * 8, f"J J^T with J ({active} nonzero rows of {dim}) × {width}, symmetric"
    )
    out["tms_top"] = bound(
        active * width * width, 0, f"Gram J^T J ({width}², {active} rows), symmetric; eigh of {width}² negligible"
    )
    # c: per tensor the narrower of its factor width P_t and its position-pair structure.
    widths = {
        "W_E": min(1920, 9 * 64),
        "W_pos": 192,
        "W_Q": min(4096, 128),
        "W_K": min(4096, 9 * 128),
        "W_V": min(4096, 9 * 128),
        "W_O": 128,
        "W_in": 64 + 256,
        "W_out": 256 + 64,
        "W_U": 64 + 30,
    }
    out["tf"] = bound(n * n * sum(widths.values()), 9 * n * n * 8, f"Σ_t N²·r_t, r = {widths} (symmetric)")
    return out


def report(tasks: list[Task], results: dict, d: Path, info: dict, log) -> None:
    calib = results.get("calibrate", {})
    if calib and "error" not in calib:
        log("calibration: " + calib["notes"][0])
    limits = _limits(calib, info)
    log("")
    log("| case | method | time | peak RSS | max rel err | ratio vs entk | notes |")
    log("|---|---|---:|---:|---:|---:|---|")
    details = []
    for case in ("mlp", "tms", "tms_top", "tf"):
        rows = [t for t in tasks if t.case == case]
        if not rows:
            continue
        entk_res = results.get(f"{case}.entk", {})
        entk_t = entk_res.get("time") if "error" not in entk_res else None
        entk_mem = entk_res.get("peak_kib")
        first_row = True
        for task in rows:
            res = results[task.name]
            title = CASE_TITLE[case] if first_row else ""
            first_row = False
            if "error" in res:
                log(f"| {title} | {task.method} | — | — | — | — | {res['error'][:600]} |")
                continue
            errs = errors(task, res, d)
            err = max(errs.values()) if errs else None
            if len(errs) > 1:
                details.append(f"{case} {task.method}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
            t_s = _fmt_s(res["time"])
            if res.get("first") is not None:
                t_s += f" (1st call {_fmt_s(res['first'])})"
            if res.get("projected"):
                t_s = "≈ " + t_s + " (projected)"
            mem = f"{res['peak_kib'] / 2**20:.2f} GiB" + ("" if res.get("reset_ok") else " (no reset)")
            if task.method == "entk" or entk_t is None:
                ratio = "1×" if task.method == "entk" else "—"
            else:
                ratio = f"{res['time'] / entk_t:,.1f}× time, {res['peak_kib'] / entk_mem:.1f}× mem"
            err_s = "(is the reference)" if task.method == "reference" else ("—" if err is None else f"{err:.1e}")
            if res.get("block") and err is not None:
                err_s += f" (on the {res['block'][0]}×{res['block'][1]} block)"
            notes = "; ".join(res.get("notes", []) + ([f"{res['cores']:.1f} cores busy"] if res.get("cores") else []))
            log(f"| {title} | {task.method} | {t_s} | {mem} | {err_s} | {ratio} | {notes} |")
        if case in limits:
            t_lim, how = limits[case]
            ratio = f"entk at {entk_t / t_lim:,.0f}× the limit" if entk_t else "—"
            log(f"|  | arithmetic limit | ≥ {t_lim:.3f} s | | | {ratio} | {how} |")
    if details:
        log("\nper-kernel errors:")
        for line in details:
            log(f"- {line}")
    fastest = {}
    for case in ("mlp", "tms", "tf"):
        nts = [
            (results[t.name]["time"], t.method)
            for t in tasks
            if t.case == case and t.method.startswith("neural-tangents") and "error" not in results[t.name]
        ]
        if nts:
            fastest[case] = min(nts)
    if fastest:
        log("\nneural-tangents, fastest implementation per case (2nd-call time; projected ones count as projected):")
        for case, (t, m) in fastest.items():
            log(f"- {CASE_TITLE[case]}: {m} {_fmt_s(t)}")


if __name__ == "__main__":
    main()
