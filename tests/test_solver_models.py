"""ALS and MCMC through the estimator: the posterior-mean model is exact through the index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmrec.data import Interactions
from fmrec.data.synthetic import load_builtin
from fmrec.errors import ConfigError
from fmrec.model import FactorizationMachine, load_model, save_model
from fmrec.model._mcmc import fit_mcmc
from fmrec.recommend import recommend_all
from fmrec.topk import TopK

from reference import assert_topk_equivalent, fm_score_naive


def small_builtin(n_users: int = 120) -> Interactions:
    data = load_builtin()
    keep = data.user_idx < n_users
    df = data.subset(keep).to_frame()
    return Interactions.from_frame(df)


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_mcmc_model_is_the_mean_of_its_samples(task: str) -> None:
    """predict == mean over kept samples of each sample's FM score (the concatenation identity)."""
    data = small_builtin(60)
    fm = FactorizationMachine(task=task, solver="mcmc", n_factors=3, n_epochs=12, n_samples=4, n_burn_in=4,
                              random_state=3).fit(data)
    # the same run, straight from the sampler
    X = fm.encoder_.transform(data)
    y = data.rating.astype(np.float64) if task == "regression" else (data.rating >= 4).astype(np.float64)
    # the estimator seeds its generator from random_state, so the same seed replays the same chain
    out = fit_mcmc(X, y, task=task, n_factors=3, n_iter=12, n_burn_in=4, n_kept=4, groups=fm.encoder_.groups(),
                   init_std=0.1, rng=np.random.default_rng(3))
    dense = X[:40].toarray()
    per_sample = np.array([[fm_score_naive(x, out["w0"][s], out["w"][s], out["V"][s]) for x in dense]
                           for s in range(4)])
    got = fm.decision_function(data.subset(slice(0, 40)))
    np.testing.assert_allclose(got, per_sample.mean(axis=0), rtol=1e-4, atol=1e-4)
    assert fm.V_.shape == (fm.encoder_.n_features, 3 * 4)
    if task == "binary":
        from scipy.special import ndtr

        np.testing.assert_allclose(fm.predict(data.subset(slice(0, 40))), ndtr(got), rtol=1e-6)


def test_mcmc_lists_equal_posterior_mean_scores_for_every_pair(tmp_path) -> None:
    data = small_builtin(80)
    fm = FactorizationMachine(task="regression", solver="mcmc", n_factors=4, n_epochs=20, n_samples=5,
                              random_state=0).fit(data)
    fm = load_model(save_model(fm, tmp_path / "m", seen=data.to_csr(binary=True)))  # through the artifact
    enc = fm.encoder_
    seen = data.to_csr(binary=True)
    tk = TopK.concat(list(recommend_all(fm, 30, seen=seen, include_untrained_items=True)))
    u = np.repeat(np.arange(enc.n_users), enc.n_items)
    i = np.tile(np.arange(enc.n_items), enc.n_users)
    truth = fm._raw(enc.transform_indices(u, i)).reshape(enc.n_users, enc.n_items)
    pos = enc.item_map.to_index(tk.item_ids.ravel()).reshape(tk.item_ids.shape)
    for r in range(len(tk)):
        excl = set(seen.indices[seen.indptr[r]:seen.indptr[r + 1]].tolist())
        assert_topk_equivalent(pos[r], tk.scores[r].astype(np.float64), truth[r], 30, excl, rtol=1e-4, atol=1e-4)


def test_als_learns_and_validation_picks_best_epoch() -> None:
    data = small_builtin(200)
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(data)) < 0.1
    train, valid = data.subset(~test_mask), data.subset(test_mask)
    fm = FactorizationMachine(task="regression", solver="als", n_factors=4, n_epochs=15, patience=3,
                              random_state=0).fit(train, valid=valid)
    vals = [h["valid_rmse"] for h in fm.history_]
    assert fm.best_epoch_ == int(np.argmin(vals)) + 1
    base = float(np.sqrt(np.mean((valid.rating - train.rating.mean()) ** 2)))
    assert min(vals) < 0.9 * base
    b = FactorizationMachine(task="binary", solver="als", n_factors=4, n_epochs=5, random_state=0).fit(train)
    p = b.predict(valid)
    assert np.all((p > 0) & (p < 1))


def test_solver_errors_and_determinism() -> None:
    data = small_builtin(40)
    with pytest.raises(ConfigError, match="ranking"):
        FactorizationMachine(task="ranking", solver="mcmc").fit(data)
    with pytest.raises(ConfigError, match="n_burn_in"):
        FactorizationMachine(solver="mcmc", n_epochs=5, n_burn_in=5).fit(data)
    a = FactorizationMachine(solver="mcmc", n_factors=2, n_epochs=6, n_samples=2, random_state=9).fit(data)
    b = FactorizationMachine(solver="mcmc", n_factors=2, n_epochs=6, n_samples=2, random_state=9).fit(data)
    np.testing.assert_array_equal(a.V_, b.V_)
    assert math.isclose(a.w0_, b.w0_)
