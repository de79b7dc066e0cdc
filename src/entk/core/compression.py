"""diag_mean compression of a layer's output-gradient rows, and width compression of any rows.

diag_mean: for each output unit j the (C, N·T) slice R_j = G[:, :, :, j] often has tiny rank (rank 1
when the layer feeds an elementwise activation and then a linear readout). With V_j an orthonormal
basis of its column space, R_jᵀ R_j = (R_jᵀ V_j)(R_jᵀ V_j)ᵀ, so the C·out columns become
Σ_j rank(R_j) columns (kept only while that is at most half of C·out). The bases come from the
per-unit C×C Grams of a small first chunk (pivoted Gram-Schmidt, no eigensolver); later chunks are
projected onto them class by class as the backward passes come, without storing their G, and are
redone with G only if their residual outside the bases is above round-off (max(C, 10)·eps
relative), which grows the bases. A layer whose rows then have a small overall rank (a readout) is
compressed once more (``compress_width``), to a factor, when that rank makes the factor no wider
than the kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def project_class(energy: Tensor, rows: Tensor, g: Tensor, basis_c: Tensor) -> None:
    """Add one class's g (m, out) to energies (out,) and rows (m, out, k), bases' class row (out, k)."""
    energy += g.square().sum(0)
    rows.addcmul_(g[:, :, None], basis_c[None])


def growing(energy: Tensor, rows: Tensor, c: int) -> Tensor:
    """Units (out,) whose residual energy outside their basis is above round-off."""
    # With orthonormal bases the residual energy is the energy less the rows' energy.
    return (energy - torch.linalg.vector_norm(rows, dim=(0, 2)).square()) > round_off(energy, c)


def round_off(energy: Tensor, c: int) -> Tensor:
    """Eigenvalue threshold max(C, 10)·eps·‖R_j‖²_F below which a direction of R_j is round-off."""
    return max(c, 10) * torch.finfo(energy.dtype).eps * energy


def rank(basis: Tensor) -> int:
    """Number of nonzero columns of per-unit bases (out, C, k)."""
    return int((basis.square().sum(1) > 0).sum())


def pivoted_basis(gram: Tensor, v: Tensor, tau: Tensor, room: int) -> Tensor:
    """Orthonormal columns (g, d, s) ⊥ v (g, d, k) spanning the eigen-directions above tau (g,) of
    PSD Grams (g, d, d) whose range is ⊥ v.

    Pivoted Gram-Schmidt on the Gram's columns, no eigensolver: a Gram stops once its residual's
    Frobenius norm, which bounds its remaining eigenvalues, is ≤ tau. Stops early once more than
    ``room`` columns were added.
    """
    d = gram.shape[1]
    cols: list[Tensor] = []
    col2 = gram.square().sum(1)
    added = 0
    while len(cols) < d and added <= room:
        active = col2.sum(1) > tau.square()
        idx = col2.argmax(1)
        if not active.any():
            break
        added += int(active.sum())
        q = gram.gather(2, idx[:, None, None].expand(-1, d, 1)).squeeze(2)
        # Project out the basis so far again: the residual is orthogonal to it only up to round-off.
        prev = torch.cat([v, *[c[:, :, None] for c in cols]], dim=2)
        q = q - (prev @ (prev.transpose(1, 2) @ q[:, :, None])).squeeze(2)
        q = q / q.norm(dim=1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny) * active[:, None]
        cols.append(q)
        gram = gram - q[:, :, None] * (q[:, None, :] @ gram)
        col2 = gram.square().sum(1)
    return torch.stack(cols, dim=2) if cols else gram.new_zeros(gram.shape[0], d, 0)


def compress_chunk(g: Tensor, basis: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """Rows R_jᵀ V_j (n, T, out, k) of a chunk g (C, n, T, out), bases V (out, C, k) grown to cover it.

    Per unit, directions of the chunk's R_j R_jᵀ below ``round_off`` are dropped; a unit grows
    only where its residual outside V_j is above that.
    """
    c, n, t, out = g.shape
    r = g.reshape(c, n * t, out)
    energy, rows = r.new_zeros(out), r.new_zeros(n * t, out, basis.shape[2])
    for k in range(c):
        project_class(energy, rows, r[k], basis[:, k, :])
    grow = growing(energy, rows, c)
    if grow.any():
        units = grow.nonzero().squeeze(1)
        e = (r if len(units) == out else r[:, :, units]).permute(2, 0, 1).contiguous()
        if basis.shape[2]:
            e -= basis[units] @ rows[:, units].permute(1, 2, 0)
        tau = round_off(energy[units], c)
        new = pivoted_basis(e @ e.transpose(1, 2), basis[units], tau, limit - rank(basis))
        extra = basis.new_zeros(out, c, new.shape[2])
        extra[units] = new
        added = rows.new_zeros(n * t, out, new.shape[2])
        added[:, units] = (new.transpose(1, 2) @ e).permute(2, 0, 1)
        basis, rows = torch.cat([basis, extra], dim=2), torch.cat([rows, added], dim=2)
    return rows.reshape(n, t, out, -1), basis


def diag_mean_step(rows: list[Tensor], basis: Tensor | None, g: Tensor) -> tuple[list[Tensor], Tensor | None]:
    """Append a chunk's diag_mean rows, compressed while Σ_j rank(R_j) ≤ C·out/2, else plain (n, T, out, C)."""
    c, out = g.shape[0], g.shape[3]
    if basis is not None:
        new, grown = compress_chunk(g, basis, c * out // 2)
        if rank(grown) <= c * out // 2:
            return rows + [new], grown
        # Compression no longer pays: earlier chunks expand exactly, R_j = V_j (R_jᵀ V_j)ᵀ.
        rows = [torch.einsum("ntjk,jck->ntjc", r, basis[:, :, : r.shape[3]]) for r in rows]
    return rows + [g.permute(1, 2, 3, 0)], None


def join_rows(rows: list[Tensor], basis: Tensor | None) -> Tensor:
    """diag_mean rows (N, T, w) from per-chunk rows: the bases' nonzero columns, or all out·C."""
    if basis is None:
        return torch.cat(rows).flatten(2)
    k = basis.shape[2]
    full = torch.cat([F.pad(r, (0, k - r.shape[3])) for r in rows])
    return full[:, :, basis.square().sum(1) > 0]


def compress_width(h: Tensor, limit: int) -> Tensor:
    """h (rows, T, w) → h Q (rows, T, r) with the same products h_at · h_bs, if its rank r ≤ limit < w.

    Q holds the eigenvectors of the (w, w) Gram hᵀh above round-off (max(w, 10)·eps·‖Gram‖_F): one
    eigensolver call on a small matrix, cheaper than stepping a pivoted basis column by column.
    """
    w = h.shape[2]
    flat = h.flatten(0, 1)
    gram = flat.T @ flat
    values, vectors = torch.linalg.eigh(gram)
    keep = values > max(w, 10) * torch.finfo(h.dtype).eps * gram.norm()
    return h @ vectors[:, keep] if int(keep.sum()) <= limit < w else h
