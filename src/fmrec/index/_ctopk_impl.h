/* Body of the exact-index selection kernels, compiled once per instruction set by
 * _ctopk.c (included with SFX / MASK64 defined and a `#pragma GCC target` around it).
 * See _ctopk.c for the contract; the algorithm is described in fmrec/index/_cbackend.py. */

/* Top-k of an empty row from one block by a sampled threshold; returns k (with the k
 * best keys in buf[0:k] and their k-th score in *T_out), or 0 to fall back to the
 * ordinary path over the block. */
static int64_t SFX(fast_start)(const float *row, const uint32_t *bits, int64_t n_cols, int64_t col_offset,
                               const int64_t *perm, uint64_t *buf, int64_t k, float *sample,
                               uint64_t *cand, int64_t cand_len, uint64_t *tmp, float *T_out)
{
    int64_t step = n_cols >= 8 * k ? 8 : 4;
    int64_t m = 0;
    for (int64_t c = 0; c < n_cols; c += step)
        sample[m++] = row[c];
    int64_t rank = (3 * k) / (2 * step) + 2; /* 1.5 x k/step, plus slack */
    if (rank >= m)
        return 0;
    partition_desc_f32(sample, m, rank, (float *)tmp);
    float T0 = sample[rank];
    if (!(T0 > -INFINITY))
        return 0;
    int64_t cap = cand_len;
    int64_t n = 0;
    int64_t n_full = n_cols - n_cols % 64;
    for (int64_t c0 = 0; c0 < n_full; c0 += 64) {
        uint64_t mask = MASK64(row + c0, T0);
        int64_t cnt = __builtin_popcountll(mask);
        if (n + cnt > cap)
            return 0;
        while (mask) {
            int64_t c = c0 + __builtin_ctzll(mask);
            mask &= mask - 1;
            cand[n++] = make_key(bits[c], perm[col_offset + c]);
        }
    }
    for (int64_t c = n_full; c < n_cols; c++) {
        if (row[c] >= T0) {
            if (n == cap)
                return 0;
            cand[n++] = make_key(bits[c], perm[col_offset + c]);
        }
    }
    if (n < k)
        return 0;
    uint64_t kth;
    if (n > k) {
        partition_desc_u64(cand, n, k - 1, tmp);
        kth = cand[k - 1];
    } else {
        kth = cand[0];
        for (int64_t t = 1; t < k; t++)
            kth = cand[t] < kth ? cand[t] : kth;
    }
    memcpy(buf, cand, (size_t)k * sizeof(uint64_t));
    *T_out = key_score(kth);
    return k;
}

static void SFX(topk_block)(float *S, int64_t ld, int64_t n_rows, int64_t n_cols, int64_t col_offset,
                            const int64_t *perm, const int64_t *ex_ptr, const int64_t *ex_pos, int64_t *ex_cur,
                            int64_t has_excl, uint64_t *keys, int64_t cap, int64_t k, int64_t *fill, float *thr,
                            float *sample, uint64_t *cand, int64_t cand_len, uint64_t *tmp)
{
    int64_t n_full = n_cols - n_cols % 64;
    int64_t end_col = col_offset + n_cols;
    for (int64_t r = 0; r < n_rows; r++) {
        float *row = S + r * ld;
        const uint32_t *bits = (const uint32_t *)row;
        if (has_excl) {
            int64_t p = ex_cur[r];
            int64_t b = ex_ptr[r + 1];
            while (p < b && ex_pos[p] < end_col) {
                row[ex_pos[p] - col_offset] = -INFINITY;
                p++;
            }
            ex_cur[r] = p;
        }
        uint64_t *buf = keys + r * cap;
        int64_t nf = fill[r];
        float T = thr[r];
        if (nf == 0 && n_cols >= 4 * k) {
            if (SFX(fast_start)(row, bits, n_cols, col_offset, perm, buf, k, sample, cand, cand_len, tmp, &T) == k) {
                fill[r] = k;
                thr[r] = T;
                continue;
            }
        }
        for (int64_t c0 = 0; c0 < n_full; c0 += 64) {
            uint64_t mask = MASK64(row + c0, T);
            while (mask) { /* the passing columns, in increasing position */
                int64_t c = c0 + __builtin_ctzll(mask);
                mask &= mask - 1;
                if (row[c] >= T) { /* the threshold may have risen since the mask was taken */
                    buf[nf++] = make_key(bits[c], perm[col_offset + c]);
                    if (nf == cap) {
                        partition_desc_u64(buf, nf, k - 1, tmp);
                        nf = k;
                        T = key_score(buf[k - 1]);
                    }
                }
            }
        }
        for (int64_t c = n_full; c < n_cols; c++) {
            if (row[c] >= T) {
                buf[nf++] = make_key(bits[c], perm[col_offset + c]);
                if (nf == cap) {
                    partition_desc_u64(buf, nf, k - 1, tmp);
                    nf = k;
                    T = key_score(buf[k - 1]);
                }
            }
        }
        fill[r] = nf;
        thr[r] = T;
    }
}
