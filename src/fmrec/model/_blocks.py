"""Block ("relational") design matrices and the Gibbs sweep that exploits them.

Private module.  An FM row here is ``x = x_u + x_i``: a user-side row shared by
every interaction of that user and an item-side row shared by every
interaction of that item.  With side features and, above all, implicit-feedback
fields (the items a user rated, the users who rated an item: hundreds of
non-zeros per row) the expanded design matrix holds ``n_rows x (nnz_u + nnz_i)``
entries; stored as blocks it holds ``n_users x nnz_u + n_items x nnz_i``
(Rendle, "Scaling factorization machines to relational data", VLDB 2013).

:class:`BlockDesign` is ``X = [B_0[map_0] | B_1[map_1] | ...]``: block ``b`` is a
CSR matrix ``B_b`` (``R_b x p_b``) and ``map_b[row]`` picks its row for every
design row; columns of the blocks follow each other, so column ``l`` of ``X``
belongs to exactly one block.

:func:`gibbs_iteration_blocks` draws exactly the same conditionals, in the same
order and with the same random numbers, as
:func:`fmrec.model._mcmc.gibbs_iteration` on the expanded matrix (a test checks
the two chains agree), but works on per-block-row aggregates: for a parameter in
block ``b`` with slope ``h_row = B[r, j] * (...)``, the sums ``sum h^2`` and
``sum h e`` over rows only need, per block row ``r``, the row count, the sum of
residuals ``E_r``, and for factors the sums of the other blocks' factor cache
``O_r``, ``OO_r = sum o^2`` and ``EO_r = sum e o``.  Updating a parameter
updates those aggregates in O(nnz of its block column); row-level caches are
synchronised once per block and factor in O(n_rows).  An iteration costs
``O(k * (n_rows * n_blocks + nnz of the blocks))`` instead of
``O(k * nnz of the expanded matrix)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit

from fmrec.errors import DataError
from fmrec.model._als import canonical_csr, draw_normal


@dataclass
class BlockDesign:
    """``X = hstack([B[map] for B, map in blocks])`` without materialising it."""

    blocks: list[tuple[sp.csr_matrix, np.ndarray]]

    def __post_init__(self) -> None:
        if not self.blocks:
            raise DataError("a block design needs at least one block")
        fixed = []
        n_rows = None
        for n, (B, m) in enumerate(self.blocks):
            B = canonical_csr(B, f"block {n}")
            m = np.ascontiguousarray(np.asarray(m).ravel(), dtype=np.int64)
            if n_rows is None:
                n_rows = m.shape[0]
            elif m.shape[0] != n_rows:
                raise DataError(f"block {n} maps {m.shape[0]} rows, block 0 maps {n_rows}")
            if m.size and (m.min() < 0 or m.max() >= B.shape[0]):
                raise DataError(f"block {n}'s row map points outside its {B.shape[0]} rows")
            fixed.append((B, m))
        self.blocks = fixed

    @property
    def shape(self) -> tuple[int, int]:
        return (self.blocks[0][1].shape[0], sum(B.shape[1] for B, _ in self.blocks))

    def expand(self) -> sp.csr_matrix:
        """The plain design matrix (for tests and small data)."""
        M = sp.hstack([B[m] for B, m in self.blocks], format="csr", dtype=np.float32)
        M.sum_duplicates()
        M.sort_indices()
        return M

    def take(self, rows: np.ndarray) -> "BlockDesign":
        """The design of a subset of rows (blocks shared)."""
        rows = np.asarray(rows, dtype=np.int64)
        return BlockDesign([(B, m[rows]) for B, m in self.blocks])

    def arrays(self, columns: bool = True) -> tuple[np.ndarray, ...]:
        """Concatenated kernel arrays (see :func:`gibbs_iteration_blocks`); ``columns=False``
        leaves the CSC part empty (scoring needs only the rows)."""
        nb = len(self.blocks)
        n_rows = self.shape[0]
        col_off = np.zeros(nb + 1, dtype=np.int64)
        r_off = np.zeros(nb + 1, dtype=np.int64)
        nz_off = np.zeros(nb + 1, dtype=np.int64)
        rp_off = np.zeros(nb + 1, dtype=np.int64)
        cp_off = np.zeros(nb + 1, dtype=np.int64)
        for b, (B, _) in enumerate(self.blocks):
            col_off[b + 1] = col_off[b] + B.shape[1]
            r_off[b + 1] = r_off[b] + B.shape[0]
            nz_off[b + 1] = nz_off[b] + B.nnz
            rp_off[b + 1] = rp_off[b] + B.shape[0] + 1
            cp_off[b + 1] = cp_off[b] + B.shape[1] + 1
        indptr = np.empty(rp_off[-1], dtype=np.int64)
        indices = np.empty(nz_off[-1], dtype=np.int32)
        data = np.empty(nz_off[-1], dtype=np.float32)
        colptr = np.empty(cp_off[-1], dtype=np.int64)
        rowidx = np.empty(nz_off[-1], dtype=np.int32)
        vals = np.empty(nz_off[-1], dtype=np.float32)
        maps = np.empty((nb, n_rows), dtype=np.int32)
        counts = np.zeros(r_off[-1], dtype=np.float64)
        for b, (B, m) in enumerate(self.blocks):
            indptr[rp_off[b]:rp_off[b + 1]] = B.indptr
            indices[nz_off[b]:nz_off[b + 1]] = B.indices
            data[nz_off[b]:nz_off[b + 1]] = B.data
            if columns:
                C = B.tocsc()
                C.sort_indices()
                colptr[cp_off[b]:cp_off[b + 1]] = C.indptr
                rowidx[nz_off[b]:nz_off[b + 1]] = C.indices
                vals[nz_off[b]:nz_off[b + 1]] = C.data
            maps[b] = m
            counts[r_off[b]:r_off[b + 1]] = np.bincount(m, minlength=B.shape[0])
        return (col_off, r_off, nz_off, rp_off, cp_off, indptr, indices, data, colptr, rowidx, vals, maps, counts)


# ------------------------------------------------------------------ kernels
@njit(cache=True, nogil=True)
def block_scores_into(col_off, r_off, nz_off, rp_off, indptr, indices, data, maps, w0, w, Vr, out, lin, q, ss):
    """Full FM scores (float64) of every design row with row-major ``Vr`` (n, k).

    Scratch: ``lin`` (sum R_b,), ``q`` and ``ss`` (sum R_b, k).
    """
    nb = col_off.shape[0] - 1
    k = Vr.shape[1]
    for b in range(nb):
        for r in range(r_off[b + 1] - r_off[b]):
            rr = r_off[b] + r
            s = 0.0
            for f in range(k):
                q[rr, f] = 0.0
                ss[rr, f] = 0.0
            base = rp_off[b]
            for p in range(indptr[base + r], indptr[base + r + 1]):
                pp = nz_off[b] + p
                j = col_off[b] + indices[pp]
                x = np.float64(data[pp])
                s += w[j] * x
                for f in range(k):
                    vx = Vr[j, f] * x
                    q[rr, f] += vx
                    ss[rr, f] += vx * vx
            lin[rr] = s
    n_rows = out.shape[0]
    for i in range(n_rows):
        s = w0
        inter = 0.0
        for f in range(k):
            qs = 0.0
            sq = 0.0
            for b in range(nb):
                rr = r_off[b] + maps[b, i]
                qs += q[rr, f]
                sq += ss[rr, f]
            inter += qs * qs - sq
        for b in range(nb):
            s += lin[r_off[b] + maps[b, i]]
        out[i] = s + 0.5 * inter


@njit(cache=True, nogil=True)
def _block_q(col_off, r_off, nz_off, rp_off, indptr, indices, data, Vt, f, b, qb, ssb):
    """qb[r] = sum_j v_jf B[r, j], ssb[r] = sum_j (v_jf B[r, j])^2 for block b."""
    base = rp_off[b]
    for r in range(r_off[b + 1] - r_off[b]):
        s = 0.0
        s2 = 0.0
        for p in range(indptr[base + r], indptr[base + r + 1]):
            pp = nz_off[b] + p
            vx = Vt[f, col_off[b] + indices[pp]] * np.float64(data[pp])
            s += vx
            s2 += vx * vx
        qb[r] = s
        ssb[r] = s2


@njit(cache=True, nogil=True)
def sweep_w_blocks(col_off, r_off, nz_off, cp_off, colptr, rowidx, vals, maps, counts,
                   groups, w, c, alpha, mu_w, lam_w, E, L):
    """Draw every linear weight, block by block (``c[:, 0]`` = row residuals, kept in sync)."""
    nb = col_off.shape[0] - 1
    n_rows = c.shape[0]
    for b in range(nb):
        R = r_off[b + 1] - r_off[b]
        for r in range(R):
            E[r] = 0.0
            L[r] = 0.0
        for i in range(n_rows):
            E[maps[b, i]] += c[i, 0]
        cnt = counts[r_off[b]:r_off[b + 1]]
        for j in range(col_off[b + 1] - col_off[b]):
            l = col_off[b] + j
            g = groups[l]
            z = np.random.standard_normal()
            lo = nz_off[b] + colptr[cp_off[b] + j]
            hi = nz_off[b] + colptr[cp_off[b] + j + 1]
            s_hh = 0.0
            s_he = 0.0
            for p in range(lo, hi):
                r = rowidx[p]
                x = np.float64(vals[p])
                s_hh += x * x * cnt[r]
                s_he += x * E[r]
            theta = w[l]
            new = draw_normal(theta, s_hh, s_he, alpha, mu_w[g], lam_w[g], z)
            d = new - theta
            if d != 0.0:
                for p in range(lo, hi):
                    r = rowidx[p]
                    dx = d * np.float64(vals[p])
                    E[r] += dx * cnt[r]
                    L[r] += dx
            w[l] = new
        for i in range(n_rows):
            c[i, 0] += L[maps[b, i]]


@njit(cache=True, nogil=True)
def sweep_v_blocks(col_off, r_off, nz_off, rp_off, cp_off, indptr, indices, data, colptr, rowidx, vals,
                   maps, counts, groups, Vt, f, c, alpha, mu_v, lam_v,
                   qall, ssall, E, O, OO, EO, qold, ssold):
    """Draw every ``v_lf`` of factor ``f``, block by block.

    On entry ``c[:, 0]`` holds row residuals; on exit residuals of the new state
    and ``c[:, 1]`` the factor cache ``q_if``.  ``qall``/``ssall`` (sum R_b,)
    scratch for every block's ``q`` and sum of squares.
    """
    nb = col_off.shape[0] - 1
    n_rows = c.shape[0]
    for b in range(nb):
        _block_q(col_off, r_off, nz_off, rp_off, indptr, indices, data, Vt, f, b,
                 qall[r_off[b]:r_off[b + 1]], ssall[r_off[b]:r_off[b + 1]])
    for i in range(n_rows):
        s = 0.0
        for b in range(nb):
            s += qall[r_off[b] + maps[b, i]]
        c[i, 1] = s
    for b in range(nb):
        R = r_off[b + 1] - r_off[b]
        qb = qall[r_off[b]:r_off[b + 1]]
        ssb = ssall[r_off[b]:r_off[b + 1]]
        cnt = counts[r_off[b]:r_off[b + 1]]
        for r in range(R):
            E[r] = 0.0
            O[r] = 0.0
            OO[r] = 0.0
            EO[r] = 0.0
            qold[r] = qb[r]
            ssold[r] = ssb[r]
        for i in range(n_rows):
            r = maps[b, i]
            o = c[i, 1] - qb[r]
            e = c[i, 0]
            E[r] += e
            O[r] += o
            OO[r] += o * o
            EO[r] += e * o
        for j in range(col_off[b + 1] - col_off[b]):
            l = col_off[b] + j
            g = groups[l]
            z = np.random.standard_normal()
            lo = nz_off[b] + colptr[cp_off[b] + j]
            hi = nz_off[b] + colptr[cp_off[b] + j + 1]
            theta = Vt[f, l]
            s_hh = 0.0
            s_he = 0.0
            for p in range(lo, hi):
                r = rowidx[p]
                x = np.float64(vals[p])
                a = qb[r] - theta * x
                s_hh += x * x * (cnt[r] * a * a + 2.0 * a * O[r] + OO[r])
                s_he += x * (a * E[r] + EO[r])
            new = draw_normal(theta, s_hh, s_he, alpha, mu_v[g], lam_v[g], z)
            d = new - theta
            if d != 0.0:
                for p in range(lo, hi):
                    r = rowidx[p]
                    x = np.float64(vals[p])
                    a = qb[r] - theta * x
                    dx = d * x
                    E[r] += dx * (cnt[r] * a + O[r])
                    EO[r] += dx * (a * O[r] + OO[r])
                    qb[r] += dx
            Vt[f, l] = new
        # new sums of squares of the block, then row-level residuals and q
        base = rp_off[b]
        for r in range(R):
            s2 = 0.0
            for p in range(indptr[base + r], indptr[base + r + 1]):
                pp = nz_off[b] + p
                vx = Vt[f, col_off[b] + indices[pp]] * np.float64(data[pp])
                s2 += vx * vx
            ssb[r] = s2
        for i in range(n_rows):
            r = maps[b, i]
            o = c[i, 1] - qold[r]
            dq = qb[r] - qold[r]
            c[i, 0] += 0.5 * (qb[r] * qb[r] - qold[r] * qold[r]) - 0.5 * (ssb[r] - ssold[r]) + dq * o
            c[i, 1] = qb[r] + o


__all__ = ["BlockDesign", "block_scores_into", "sweep_v_blocks", "sweep_w_blocks"]
