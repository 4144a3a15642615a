"""The ``FactorizationMachine`` estimator (scikit-learn conventions)."""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec.data import Interactions
from fmrec.data.encode import Encoder
from fmrec.errors import ConfigError, DataError, DivergenceError, NotFittedError
from fmrec.model._state import sgd_state
from fmrec.model._tracking import EpochTracker

log = logging.getLogger("fmrec.model")

TASKS = ("regression", "binary", "ranking")
LOSSES = ("bpr", "warp")
SOLVERS = ("sgd", "als", "mcmc")
OPTIMIZERS = ("adagrad", "sgd")


class FactorizationMachine:
    """Degree-2 factorization machine trained by per-sample SGD (AdaGrad by default).

    ``y(x) = w0 + w.x + sum_{j<l} <v_j, v_l> x_j x_l``

    Parameters
    ----------
    task : "regression" (squared loss), "binary" (logistic loss) or "ranking"
        (implicit feedback, pairwise loss over sampled negative items).  With
        ``Interactions`` input, ``binary`` labels are ``rating >= threshold`` (ratings
        that are all 0 or 1 are taken as labels as they are);
        ``ranking`` treats every row as a positive, or only rows with
        ``rating >= positive_threshold`` when that is set.
    n_factors : number of latent factors ``k``.
    n_epochs : maximum passes over the data (``None``: 20 for regression and
        binary, 100 for ranking).
    solver : "sgd" (per-sample, lock-free threads; every task), "als" (coordinate
        descent with a closed form / Newton step per parameter, no learning rate;
        regression and binary) or "mcmc" (Gibbs sampling with Normal-Gamma
        hyperpriors grouped per field; regression and binary probit).  ALS and MCMC
        penalties are totals over the data (not per sample as for SGD); their
        defaults differ (``l2_linear`` 5, ``l2_factors`` 10 for ALS; MCMC learns them).
    optimizer : "adagrad" (per-parameter step sizes) or "sgd" (plain steps).
    learning_rate : step size for every parameter group unless overridden by
        ``learning_rate_bias`` / ``learning_rate_linear`` / ``learning_rate_factors``.
    l2_bias, l2_linear, l2_factors : L2 penalties for ``w0``, ``w`` and ``V``
        (``l2_factors=None``: 0.1 for regression, 0.05 for binary, 0.01 for
        ranking, tuned on MovieLens-100K).
    init_std : standard deviation of the normal initialisation of ``V``.
    threshold : rating threshold for ``binary`` labels from ratings.
    n_threads : training/prediction threads.  The same ``random_state`` gives the same
        model at a fixed thread count: more than one SGD/BPR/WARP thread follows a
        fixed schedule (user and item blocks per thread, DSGD-style; shared columns
        such as side features on private copies merged in thread order, see
        :mod:`fmrec.model._strata`), not racing Hogwild updates.  ALS updates the
        columns of one-hot fields (users, items) in parallel, which gives the same model
        at any thread count; MCMC is sequential.
    deterministic : train SGD/BPR/WARP sequentially whatever ``n_threads`` says, so
        the same seed gives the same model at *any* thread count (prediction and
        scoring still use ``n_threads``).
    random_state : seed (int), ``numpy.random.Generator`` or None.
    early_stopping : with a validation set, stop when the validation metric has
        not improved for ``patience`` epochs and restore the best epoch's parameters.
    clip_predictions : for regression, clip predictions to the training target range.
    verbose : log one line per epoch (loss, validation metric) to the ``fmrec`` logger.
    n_samples : MCMC: thinned posterior samples kept.  The posterior-mean model is
        itself an FM whose ``V_`` is the samples' factors concatenated and scaled by
        ``1/sqrt(n_samples)`` (so predict, export and the index serve it exactly).
    n_burn_in : MCMC: iterations discarded first (default ``n_epochs // 10``).
    loss : ranking loss, "bpr" (default; Bayesian personalised ranking, one uniform
        negative per positive) or "warp" (weighted approximate-rank pairwise: samples
        up to ``max_sampled`` negatives until one violates the margin).
    implicit : implicit-feedback fields from the training interactions (SVD++'s idea,
        as libFM/myFM use): "user" adds to every user the items it interacted with,
        "item" adds to every item the users who interacted with it, "both" adds both,
        each weighted ``1/sqrt(count)`` and regularised as its own field; None (default)
        adds none.  Needs ``Interactions``/DataFrame input.  The MCMC solver trains on
        the shared user/item blocks (cost ~ users + items, not rows x their sizes);
        SGD and ALS expand every row (hundreds of columns each: much slower).
    context : "day" adds a context field: the UTC calendar day of each interaction's
        timestamp, one-hot over the training days (libFM/myFM's date feature; it
        captures rating sessions).  Needs timestamps.  ``predict`` on interactions
        with timestamps uses it; pairs without a time (``score_pairs``, the export,
        ``recommend``) and days unseen in training set no context column.  None
        (default) adds none.
    field_l2 : SGD and ALS: L2 penalties per field, ``{field name: value}`` with a number
        (linear and factor terms) or a ``(l2_linear, l2_factors)`` pair; fields not named
        use ``l2_linear`` / ``l2_factors``.  Field names are the encoder's layout:
        "user", "item", "user:<column>", "item:<column>", "user/implicit",
        "item/implicit", "context/day".  (MCMC learns one prior per field instead.)

    Fitted attributes: ``w0_``, ``w_``, ``V_``, ``history_`` (list of per-epoch dicts),
    ``n_features_in_``, ``encoder_`` (ID maps; ``None`` when fit on a matrix),
    ``y_range_``, ``best_epoch_``.
    """

    def __init__(
        self,
        task: str = "regression",
        n_factors: int = 64,
        n_epochs: int | None = None,
        solver: str = "sgd",
        optimizer: str = "adagrad",
        learning_rate: float = 0.05,
        learning_rate_bias: float | None = None,
        learning_rate_linear: float | None = None,
        learning_rate_factors: float | None = None,
        l2_bias: float = 0.0,
        l2_linear: float | None = None,
        l2_factors: float | None = None,
        init_std: float | None = None,
        threshold: float = 4.0,
        n_threads: int = 1,
        random_state: Any = None,
        early_stopping: bool = True,
        patience: int = 5,
        clip_predictions: bool = True,
        verbose: bool = False,
        loss: str = "bpr",
        max_sampled: int = 10,
        positive_threshold: float | None = None,
        n_samples: int = 50,
        n_burn_in: int | None = None,
        deterministic: bool = False,
        implicit: str | None = None,
        context: str | None = None,
        field_l2: dict[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.solver = solver
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.learning_rate_bias = learning_rate_bias
        self.learning_rate_linear = learning_rate_linear
        self.learning_rate_factors = learning_rate_factors
        self.l2_bias = l2_bias
        self.l2_linear = l2_linear
        self.l2_factors = l2_factors
        self.init_std = init_std
        self.threshold = threshold
        self.n_threads = n_threads
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.patience = patience
        self.clip_predictions = clip_predictions
        self.verbose = verbose
        self.loss = loss
        self.max_sampled = max_sampled
        self.positive_threshold = positive_threshold
        self.n_samples = n_samples
        self.n_burn_in = n_burn_in
        self.deterministic = deterministic
        self.implicit = implicit
        self.context = context
        self.field_l2 = field_l2

    # --------------------------------------------------------- sklearn plumbing
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "FactorizationMachine":
        valid = set(self._get_param_names())
        for key, value in params.items():
            if key not in valid:
                raise ConfigError(f"invalid parameter {key!r} for FactorizationMachine; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"FactorizationMachine({', '.join(changed)})"

    # ------------------------------------------------------------- validation
    def _validate_params(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (isinstance(self.n_factors, (int, np.integer)) and self.n_factors >= 1):
            raise ConfigError(f"n_factors must be a positive integer, got {self.n_factors!r}")
        if self.n_epochs is not None and not (isinstance(self.n_epochs, (int, np.integer)) and self.n_epochs >= 1):
            raise ConfigError(f"n_epochs must be a positive integer, got {self.n_epochs!r}")
        for name in ("learning_rate", "learning_rate_bias", "learning_rate_linear", "learning_rate_factors"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        for name in ("l2_bias", "l2_linear", "l2_factors", "init_std"):
            v = getattr(self, name)
            if v is None and name in ("l2_factors", "l2_linear", "init_std"):
                continue
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a non-negative number, got {v!r}")
        if self.solver != "sgd" and self.task == "ranking":
            raise ConfigError(f"solver {self.solver!r} does not support task='ranking' (BPR/WARP are SGD only)")
        if not (isinstance(self.n_samples, (int, np.integer)) and self.n_samples >= 1):
            raise ConfigError(f"n_samples must be a positive integer, got {self.n_samples!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (isinstance(self.max_sampled, (int, np.integer)) and self.max_sampled >= 1):
            raise ConfigError(f"max_sampled must be a positive integer, got {self.max_sampled!r}")
        if not (isinstance(self.patience, (int, np.integer)) and self.patience >= 1):
            raise ConfigError(f"patience must be a positive integer, got {self.patience!r}")
        if self.implicit not in (None, "none", "user", "item", "both"):
            raise ConfigError(f"implicit must be one of None, 'none', 'user', 'item', 'both'; got {self.implicit!r}")
        if self.field_l2 is not None:
            if not isinstance(self.field_l2, dict):
                raise ConfigError(f"field_l2 must be a mapping of field name to penalty, got {self.field_l2!r}")
            for name, v in self.field_l2.items():
                pair = v if isinstance(v, (tuple, list)) else (v, v)
                ok = len(pair) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                            and math.isfinite(x) and x >= 0 for x in pair)
                if not ok:
                    raise ConfigError(f"field_l2[{name!r}] must be a non-negative number or a pair "
                                      f"(l2_linear, l2_factors), got {v!r}")
            if self.solver == "mcmc":
                raise ConfigError("field_l2 does not apply to solver='mcmc' (it learns one prior per field)")
        if self.context not in (None, "none", "day"):
            raise ConfigError(f"context must be None, 'none' or 'day'; got {self.context!r}")
        if self.task == "ranking" and self.context not in (None, "none"):
            raise ConfigError("context fields describe an interaction's time; the ranking task scores "
                              "(user, item) pairs without one, so context cannot be used with task='ranking'")

    def _rates(self) -> tuple[float, float, float]:
        lr = self.learning_rate
        return (
            float(self.learning_rate_bias if self.learning_rate_bias is not None else lr),
            float(self.learning_rate_linear if self.learning_rate_linear is not None else lr),
            float(self.learning_rate_factors if self.learning_rate_factors is not None else lr),
        )

    _TASK_DEFAULTS = {
        "regression": {"n_epochs": 20, "l2_factors": 0.1},
        "binary": {"n_epochs": 20, "l2_factors": 0.05},
        "ranking": {"n_epochs": 100, "l2_factors": 0.01},
    }
    _SOLVER_DEFAULTS = {
        "sgd": {"l2_linear": 0.01, "init_std": 0.01},
        "als": {"n_epochs": 30, "l2_linear": 5.0, "l2_factors": 10.0, "init_std": 0.1},
        "mcmc": {"n_epochs": 200, "l2_linear": 0.0, "init_std": 0.1},
    }

    def _default(self, name: str) -> Any:
        return {**self._TASK_DEFAULTS[self.task], **self._SOLVER_DEFAULTS.get(self.solver, {})}[name]

    def _l2_factors(self) -> float:
        if self.l2_factors is None:
            return float(self._default("l2_factors"))
        return float(self.l2_factors)

    def _l2_linear(self) -> float:
        return float(self._default("l2_linear") if self.l2_linear is None else self.l2_linear)

    def _l2_columns(self, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        """(linear, factor) L2 penalty of every design column: the defaults, with the
        fields named in ``field_l2`` set to theirs."""
        l2w = np.full(n_features, self._l2_linear(), dtype=np.float32)
        l2v = np.full(n_features, self._l2_factors(), dtype=np.float32)
        if self.field_l2:
            enc = getattr(self, "encoder_", None)
            if enc is None:
                raise ConfigError("field_l2 needs a field layout: fit on Interactions or a DataFrame")
            fields = {f.name: f for f in enc.fields}
            for name, v in self.field_l2.items():
                if name not in fields:
                    raise ConfigError(f"field_l2 names unknown field {name!r}; this model's fields are "
                                      f"{list(fields)}")
                a, b = v if isinstance(v, (tuple, list)) else (v, v)
                f = fields[name]
                l2w[f.offset:f.offset + f.size] = a
                l2v[f.offset:f.offset + f.size] = b
        return l2w, l2v

    def _init_std(self) -> float:
        return float(self._default("init_std") if self.init_std is None else self.init_std)

    def _n_epochs(self) -> int:
        if self.n_epochs is None:
            return int(self._default("n_epochs"))
        return int(self.n_epochs)

    def _targets(self, inter: Interactions) -> np.ndarray:
        if inter.rating is None:
            if self.task == "regression":
                raise DataError("regression needs ratings, but the data has no rating column", path=inter.source)
            return np.ones(len(inter), dtype=np.float64)
        if self.task == "binary":
            if np.all((inter.rating == 0) | (inter.rating == 1)):
                return inter.rating.astype(np.float64)  # already 0/1 labels (e.g. RecordIO channels)
            return (inter.rating >= self.threshold).astype(np.float64)
        return inter.rating.astype(np.float64)

    def _make_encoder(self, X: Interactions, user_features: Any, item_features: Any) -> Encoder:
        from fmrec.data.features import SideFeatures, read_feature_table

        sides = []
        for table in (user_features, item_features):
            if table is None:
                sides.append(None)
                continue
            if not hasattr(table, "roles"):
                table = read_feature_table(table)
            sides.append(SideFeatures.fit(table))
        days = None
        if self.context not in (None, "none"):
            if getattr(X, "timestamp", None) is None:
                raise ConfigError("context='day' needs timestamps, but the training data has none")
            days = Encoder.days_of(X.timestamp)
        return Encoder(X.user_map, X.item_map, sides[0], sides[1], *Encoder.implicit_matrices(X, self.implicit),
                       context_days=days)

    def _predict_encoder(self, user_features: Any, item_features: Any) -> Encoder:
        """The fitted encoder, with extra feature rows (cold users/items) when given."""
        if getattr(self, "encoder_", None) is None:
            raise ConfigError("this model was fit on a design matrix; predict needs a design matrix too")
        if user_features is None and item_features is None:
            return self.encoder_
        from fmrec.data.features import read_feature_table

        def table(t: Any) -> Any:
            return None if t is None else (t if hasattr(t, "roles") else read_feature_table(t))

        return self.encoder_.with_features(table(user_features), table(item_features))

    def _as_matrix(self, X: Any, y: Any, fitting: bool, user_features: Any = None,
                   item_features: Any = None, blocks: bool | None = False) -> tuple[Any, np.ndarray | None]:
        """Turn supported inputs into (CSR design matrix, targets or None); with
        ``blocks`` and interactions, a :class:`~fmrec.model._blocks.BlockDesign`
        (shared user and item rows) instead of the expanded matrix (``None``: when
        the encoder has more than ID fields)."""
        if isinstance(X, pd.DataFrame):
            X = Interactions.from_frame(X, allow_empty=not fitting, duplicates="keep" if not fitting else "error")
        if isinstance(X, Interactions):
            if fitting:
                self.encoder_ = enc = self._make_encoder(X, user_features, item_features)
            else:
                enc = self._predict_encoder(user_features, item_features)
            if blocks is None:  # predicting: blocks pay off when rows share wide user/item rows
                blocks = enc._has_extra() or enc.context_days is not None
            if blocks:
                M = enc.block_design(X)
            else:
                M = enc.transform(X)
            t = self._targets(X) if (y is None and (fitting or X.rating is not None)) else None
            if y is not None:
                t = np.asarray(y, dtype=np.float64)
            return M, t
        if not sp.issparse(X):
            X = np.asarray(X)
            if X.ndim != 2:
                raise DataError(f"X must be 2-D, got shape {X.shape}")
        M = sp.csr_matrix(X, dtype=np.float32)
        if fitting:
            if self.implicit not in (None, "none") or self.context not in (None, "none"):
                raise ConfigError("implicit and context fields are built from interactions: fit on Interactions or a "
                                  "DataFrame, not on a design matrix")
            self.encoder_ = None
        t = None
        if y is not None:
            t = np.asarray(y, dtype=np.float64).ravel()
            if t.shape[0] != M.shape[0]:
                raise DataError(f"X has {M.shape[0]} rows but y has {t.shape[0]} values")
            if not np.all(np.isfinite(t)):
                r = int(np.flatnonzero(~np.isfinite(t))[0])
                raise DataError("target is not finite", line=r + 1, value=float(t[r]))
            if self.task == "binary" and not np.all((t == 0) | (t == 1)):
                t = (t >= self.threshold).astype(np.float64)
        return M, t

    @staticmethod
    def _csr_arrays(M: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not np.all(np.isfinite(M.data)):
            raise DataError("design matrix holds non-finite values")
        return (
            np.ascontiguousarray(M.indptr, dtype=np.int64),
            np.ascontiguousarray(M.indices, dtype=np.int32),
            np.ascontiguousarray(M.data, dtype=np.float32),
        )

    # --------------------------------------------------------------------- fit
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        valid: Any = None,
        y_valid: Any = None,
        user_features: Any = None,
        item_features: Any = None,
    ) -> "FactorizationMachine":
        """Fit on ``Interactions`` / a DataFrame (``user_id, item_id, rating``) or a
        sparse design matrix with targets ``y``.  ``valid`` (same kinds) enables
        per-epoch validation and early stopping.  ``user_features`` /
        ``item_features`` (:class:`~fmrec.data.features.FeatureTable` or a path)
        add side-feature fields to the design matrix.  Returns ``self``."""
        from fmrec._threads import thread_limits
        from fmrec.model import _kernels as K

        if getattr(X, "_fmrec_stream_source", False):  # a streaming.ParquetSource: see fit_parquet
            if y is not None:
                raise ConfigError("y cannot be given with a ParquetSource (targets come from its rating column)")
            return self.fit_parquet(X, valid=valid, y_valid=y_valid, user_features=user_features,
                                    item_features=item_features)
        self._validate_params()
        if self.task == "ranking":
            return self._fit_ranking(X, valid, user_features, item_features)
        if isinstance(X, pd.DataFrame):
            X = Interactions.from_frame(X)
        M, t = self._as_matrix(X, y, fitting=True, user_features=user_features, item_features=item_features,
                               blocks=self.solver == "mcmc")
        if t is None:
            raise DataError("fit needs targets: pass y, or interactions with ratings")
        if M.shape[0] == 0:
            raise DataError("no training rows")
        if self.solver != "mcmc":
            indptr, indices, data = self._csr_arrays(M)
        n_features = M.shape[1]
        Mv, tv = self._validation_matrix(valid, y_valid, n_features)
        rng = np.random.default_rng(self.random_state)
        self.y_range_ = (float(t.min()), float(t.max()))
        self.n_features_in_ = n_features
        self.link_ = "logit"
        if self.solver == "als":
            return self._fit_als(M, t, Mv, tv, rng)
        if self.solver == "mcmc":
            return self._fit_mcmc(M, t, rng)
        w0, w, V, g_w0, g_w, g_V, (lr_b, lr_w, lr_v), task, opt, n_threads = sgd_state(
            self, n_features, rng, float(t.mean()))
        tracker = EpochTracker(self, self._n_epochs(), minimize=True)
        y64 = np.ascontiguousarray(t, dtype=np.float64)
        strata = None
        if n_threads > 1:  # the reproducible parallel schedule (see fmrec.model._strata)
            from fmrec.model._strata import Strata, id_columns

            T = n_threads
            structured = isinstance(X, Interactions)
            if structured:
                strata = Strata(T, n_features, id_columns(self.encoder_),
                                np.bincount(X.user_idx, minlength=self.encoder_.n_users),
                                np.bincount(X.item_idx, minlength=self.encoder_.n_items))
            else:
                strata = Strata(T, n_features, np.zeros(n_features, bool))
            row_u = X.user_idx if structured else None
            row_i = X.item_idx if structured else None
            indices = strata.remap(M, strata.thread_of(row_u, M.shape[0]))
            w, V, g_w, g_V = strata.attach(w, V, g_w, g_V)
        l2 = (float(self.l2_bias), *self._l2_columns(n_features))
        if strata is not None:
            l2 = (l2[0], *strata.penalties(*l2[1:]))
        with thread_limits(n_threads, blas_threads=1):
            for epoch in range(1, self._n_epochs() + 1):
                start = time.perf_counter()
                order = rng.permutation(M.shape[0]).astype(np.int64)
                if strata is None:
                    total = K.sgd_epoch(
                        indptr, indices, data, y64, order, task, opt,
                        w0, w, V, g_w0, g_w, g_V, lr_b, lr_w, lr_v, *l2, 1,
                    )
                else:
                    total = strata.sgd_epoch(indptr, indices, data, y64, order, row_u, row_i, task, opt,
                                             w0, g_w0, (lr_b, lr_w, lr_v), l2)
                loss = total / M.shape[0]
                if not math.isfinite(loss) or not (np.isfinite(w0[0]) and np.isfinite(w).all() and np.isfinite(V).all()):
                    raise DivergenceError(
                        f"training diverged at epoch {epoch} (loss={loss}); lower the learning rate "
                        f"(learning_rate={self.learning_rate}, factors {lr_v}) or raise the L2 penalties"
                    )
                entry: dict[str, float] = {
                    "epoch": epoch,
                    "train_loss": (math.sqrt(2 * loss) if task == K.TASK_REGRESSION else loss),
                    "seconds": time.perf_counter() - start,
                }
                metric = None
                if Mv is not None:
                    self.w0_, self.w_, self.V_ = float(w0[0]), w, V
                    entry.update(self._valid_metrics(Mv, tv))
                    metric = entry["valid_rmse"] if task == K.TASK_REGRESSION else entry["valid_log_loss"]
                if tracker.record(entry, metric, lambda: (float(w0[0]), w.copy(), V.copy())):
                    break
        tracker.finish(self._set_params, (float(w0[0]), w.copy(), V.copy()))
        return self

    # ------------------------------------------------------ streaming fit
    def fit_parquet(
        self,
        path: Any,
        *,
        user_col: str | None = None,
        item_col: str | None = None,
        rating_col: str | None = None,
        timestamp_col: str | None = None,
        batch_rows: int | None = None,
        duplicates: str | None = None,
        valid: Any = None,
        y_valid: Any = None,
        user_features: Any = None,
        item_features: Any = None,
    ) -> "FactorizationMachine":
        """Fit on a Parquet file (or a folder of Parquet files) larger than memory.

        SGD solver only (every task).  The file is streamed: a first pass builds the
        ID maps and target statistics, a second the users x items seen pattern
        (``seen_``, also the ranking positives), then every regression / binary epoch
        streams ``batch_rows``-row batches (default 1,000,000) through the same
        kernel as :meth:`fit`.  ``path`` may also be a
        :class:`~fmrec.model.streaming.ParquetSource` (then the column options must be
        left out).  ``duplicates``: ``"error"`` (default: a repeated (user, item) pair
        names both rows) or ``"keep"`` (train on every row).  ``valid`` and the feature
        tables are as for :meth:`fit` (in memory).
        Shuffle, memory and equivalence with :meth:`fit`: :mod:`fmrec.model.streaming`.
        Fitted attributes as :meth:`fit`, plus ``seen_`` and ``stream_info_``.
        """
        from fmrec.model.streaming import DEFAULT_BATCH_ROWS, ParquetSource, fit_stream

        if getattr(path, "_fmrec_stream_source", False):
            given = [n for n, v in (("user_col", user_col), ("item_col", item_col), ("rating_col", rating_col),
                                    ("timestamp_col", timestamp_col), ("batch_rows", batch_rows),
                                    ("duplicates", duplicates)) if v is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} cannot be given with a ParquetSource (set them on the source)")
            source = path
        else:
            self._validate_params()  # bad parameters fail before the file is opened
            source = ParquetSource(path, user_col=user_col, item_col=item_col, rating_col=rating_col,
                                   timestamp_col=timestamp_col,
                                   batch_rows=DEFAULT_BATCH_ROWS if batch_rows is None else batch_rows,
                                   duplicates="error" if duplicates is None else duplicates)
        return fit_stream(self, source, valid=valid, y_valid=y_valid,
                          user_features=user_features, item_features=item_features)

    def _fit_als(self, M: sp.csr_matrix, t: np.ndarray, Mv: Any, tv: Any,
                 rng: np.random.Generator) -> "FactorizationMachine":
        """Coordinate descent (:mod:`fmrec.model._als`); validation picks the best epoch."""
        from fmrec.model._als import fit_als

        tracker = EpochTracker(self, self._n_epochs(), minimize=True)
        start = [time.perf_counter()]

        def callback(epoch: int, w0: float, w: np.ndarray, V: np.ndarray, loss: float) -> bool:
            entry: dict[str, float] = {"epoch": epoch, "train_loss": float(loss),
                                       "seconds": time.perf_counter() - start[0]}
            start[0] = time.perf_counter()
            metric = None
            if Mv is not None:
                self.w0_, self.w_, self.V_ = float(w0), w, V
                entry.update(self._valid_metrics(Mv, tv))
                metric = entry["valid_rmse"] if self.task == "regression" else entry["valid_log_loss"]
            return tracker.record(entry, metric, lambda: (float(w0), w, V))  # fit_als hands over copies

        from fmrec._threads import thread_limits

        # columns of one-hot fields (users, items) are updated in parallel: the same model at any
        # thread count (see fmrec.model._als, "parallel sweeps")
        with thread_limits(self.n_threads, blas_threads=1):
            w0, w, V = fit_als(M, t, task=self.task, n_factors=int(self.n_factors), n_epochs=self._n_epochs(),
                               l2_bias=float(self.l2_bias), **dict(zip(("l2_linear", "l2_factors"),
                                                                        self._l2_columns(M.shape[1]))),
                               init_std=self._init_std(), rng=rng, callback=callback)
        tracker.finish(self._set_params, (float(w0), w, V))
        return self

    def _fit_mcmc(self, M: sp.csr_matrix, t: np.ndarray, rng: np.random.Generator) -> "FactorizationMachine":
        """Gibbs sampling (:mod:`fmrec.model._mcmc`); the posterior mean of the kept samples
        is stored as one FM with concatenated, ``1/sqrt(S)``-scaled factors."""
        from fmrec.model._mcmc import fit_mcmc

        enc = getattr(self, "encoder_", None)
        groups = enc.groups() if enc is not None else np.zeros(M.shape[1], dtype=np.int64)
        n_iter = self._n_epochs()
        burn = self.n_burn_in if self.n_burn_in is not None else n_iter // 10
        if not 0 <= burn < n_iter:
            raise ConfigError(f"n_burn_in must be in [0, n_epochs), got {burn} with n_epochs={n_iter}")
        n_kept = min(int(self.n_samples), n_iter - burn)
        out = fit_mcmc(M, t, task=self.task, n_factors=int(self.n_factors), n_iter=n_iter, n_burn_in=burn,
                       n_kept=n_kept, groups=groups, init_std=self._init_std(), rng=rng)
        S = out["V"].shape[0]
        self.w0_ = float(np.mean(out["w0"]))
        self.w_ = np.ascontiguousarray(out["w"].astype(np.float64).mean(axis=0), dtype=np.float32)
        Vs = out["V"].astype(np.float64) / math.sqrt(S)  # (S, n, k) -> (n, S*k)
        self.V_ = np.ascontiguousarray(np.transpose(Vs, (1, 0, 2)).reshape(M.shape[1], -1), dtype=np.float32)
        self.history_ = [{k_: float(v) for k_, v in h.items()} for h in out["history"]]
        self.best_epoch_ = n_iter
        self.n_samples_ = S
        if self.task == "binary":
            self.link_ = "probit"
        if self.verbose:
            log.info("MCMC: %d iterations, %d burn-in, %d samples kept", n_iter, burn, S)
        return self

    def _fit_ranking(self, X: Any, valid: Any, user_features: Any = None,
                     item_features: Any = None) -> "FactorizationMachine":
        """BPR / WARP over positive (user, item) pairs with sampled negative items."""
        from fmrec._threads import thread_limits
        from fmrec.model import _kernels as K

        if isinstance(X, pd.DataFrame):
            X = Interactions.from_frame(X)
        if not isinstance(X, Interactions):
            raise ConfigError("task='ranking' needs Interactions (or a DataFrame user_id, item_id[, rating])")
        if len(X) == 0:
            raise DataError("no training rows")
        self.encoder_ = enc = self._make_encoder(X, user_features, item_features)
        keep = np.ones(len(X), dtype=bool)
        if self.positive_threshold is not None:
            if X.rating is None:
                raise DataError("positive_threshold needs ratings, but the data has none", path=X.source)
            keep = X.rating >= self.positive_threshold
        pos = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (X.user_idx[keep], X.item_idx[keep])),
            shape=(enc.n_users, enc.n_items),
        )
        pos.sum_duplicates()
        pos.sort_indices()
        if pos.nnz == 0:
            raise DataError("no positive rows (check positive_threshold)", path=X.source)
        coo = pos.tocoo()
        pos_u = coo.row.astype(np.int64)
        pos_i = coo.col.astype(np.int64)
        U = enc.user_rows(np.arange(enc.n_users))
        It = enc.item_rows(np.arange(enc.n_items))
        up, ui, ud = self._csr_arrays(U)
        ip, ii, idata = self._csr_arrays(It)
        pos_indptr = pos.indptr.astype(np.int64)
        pos_indices = pos.indices.astype(np.int32)
        n_features = enc.n_features
        rng = np.random.default_rng(self.random_state)
        _, w, V, _, g_w, g_V, (_, lr_w, lr_v), loss_kind, opt, n_threads = sgd_state(self, n_features, rng)
        self.w0_ = 0.0
        self.y_range_ = (0.0, 1.0)
        self.n_features_in_ = n_features
        self.train_pattern_ = pos
        tracker = EpochTracker(self, self._n_epochs(), minimize=False)
        strata = None
        if n_threads > 1:  # the reproducible parallel schedule (see fmrec.model._strata)
            from fmrec.model._strata import Strata, id_columns, pairwise_arrays

            T = n_threads
            n_items = enc.n_items
            strata = Strata(T, n_features, id_columns(enc, ("user",)), np.diff(pos.indptr),
                            np.bincount(pos.indices, minlength=enc.n_items))
            pa = pairwise_arrays(strata, U, It)
            w, V, g_w, g_V = strata.attach(w, V, g_w, g_V)
        l2 = self._l2_columns(n_features)
        if strata is not None:
            l2 = strata.penalties(*l2)
        with thread_limits(n_threads, blas_threads=1):
            for epoch in range(1, self._n_epochs() + 1):
                start = time.perf_counter()
                order = rng.permutation(pos.nnz).astype(np.int64)
                if strata is None:
                    seeds = rng.integers(0, 2**31 - 1, size=1).astype(np.int64)
                    total = K.pairwise_epoch(
                        up, ui, ud, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, seeds,
                        loss_kind, int(self.max_sampled), opt, w, V, g_w, g_V, lr_w, lr_v, *l2,
                    )
                else:
                    total = strata.pairwise_epoch(
                        up, ud, pa, pos_u, pos_i, pos_indptr, pos_indices, order,
                        lambda s_: rng.integers(0, 2**31 - 1, size=T).astype(np.int64),
                        loss_kind, int(self.max_sampled), opt, (lr_w, lr_v), l2, n_items,
                    )
                loss = total / pos.nnz
                if not math.isfinite(loss) or not (np.isfinite(w).all() and np.isfinite(V).all()):
                    raise DivergenceError(
                        f"training diverged at epoch {epoch} (loss={loss}); lower the learning rate "
                        f"(learning_rate={self.learning_rate}, factors {lr_v}) or raise the L2 penalties"
                    )
                entry: dict[str, float] = {"epoch": epoch, "train_loss": loss,
                                           "seconds": time.perf_counter() - start}
                metric = None
                if valid is not None:
                    self.w_, self.V_ = w, V
                    entry.update(self._ranking_valid(valid, pos))
                    metric = entry["valid_ndcg@10"]
                if tracker.record(entry, metric, lambda: (0.0, w.copy(), V.copy())):
                    break
        tracker.finish(self._set_params, (0.0, w.copy(), V.copy()))
        return self

    def _ranking_valid(self, valid: Any, train_pattern: sp.csr_matrix) -> dict[str, float]:
        """precision@10 and ndcg@10 of the current parameters on held-out positives."""
        from fmrec.evaluate import ranking_metrics
        from fmrec.recommend import recommend_all

        if isinstance(valid, pd.DataFrame):
            valid = Interactions.from_frame(valid, duplicates="first")
        users = np.unique(valid.user_map.to_external(valid.user_idx))
        users = users[self.encoder_.user_map.to_index(users) >= 0]
        batches = recommend_all(self, 10, users=users, seen=train_pattern, index="exact")
        rel = valid.to_frame()
        mr = self.positive_threshold if (self.positive_threshold is not None and valid.rating is not None) else None
        m = ranking_metrics(batches, rel, 10, ("precision", "ndcg"), min_rating=mr)
        return {"valid_precision@10": m["precision@10"], "valid_ndcg@10": m["ndcg@10"]}

    def _validation_matrix(self, valid: Any, y_valid: Any, n_features: int) -> tuple[Any, Any]:
        """(design matrix, targets) of a validation set, or (None, None) without one."""
        if valid is None:
            return None, None
        Mv, tv = self._as_matrix(valid, y_valid, fitting=False)
        if tv is None:
            raise DataError("validation data needs targets")
        if Mv.shape[1] != n_features:
            raise DataError(f"validation matrix has {Mv.shape[1]} columns, training has {n_features}")
        return Mv, tv

    def _set_params(self, params: tuple[float, np.ndarray, np.ndarray]) -> None:
        self.w0_, self.w_, self.V_ = float(params[0]), params[1], params[2]

    def _valid_metrics(self, Mv: sp.csr_matrix, tv: np.ndarray) -> dict[str, float]:
        raw = self._raw(Mv)
        if self.task == "regression":
            pred = self._clip(raw)
            return {"valid_rmse": float(np.sqrt(np.mean((pred - tv) ** 2)))}
        prob = _probit(raw) if getattr(self, "link_", "logit") == "probit" else _sigmoid(raw)
        eps = 1e-15
        pc = np.clip(prob, eps, 1 - eps)
        ll = float(-np.mean(tv * np.log(pc) + (1 - tv) * np.log(1 - pc)))
        acc = float(np.mean((prob >= 0.5) == (tv == 1)))
        return {"valid_log_loss": ll, "valid_accuracy": acc}

    # ----------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "V_"):
            raise NotFittedError("this FactorizationMachine is not fitted yet; call fit first")

    def _raw(self, M: Any) -> np.ndarray:
        from fmrec._threads import resolve_threads, thread_limits
        from fmrec.model import _kernels as K
        from fmrec.model._blocks import BlockDesign, block_scores_into

        if M.shape[1] != self.n_features_in_:
            raise DataError(f"X has {M.shape[1]} columns; the model was trained with {self.n_features_in_}")
        if isinstance(M, BlockDesign):
            col_off, r_off, nz_off, rp_off, _, ip, ix, dt, _, _, _, maps, _ = M.arrays(columns=False)
            R, k = int(r_off[-1]), self.V_.shape[1]
            if R * k * 16 > (256 << 20):  # too many distinct users/items for the block caches
                return self._raw(M.expand())
            out = np.empty(M.shape[0], dtype=np.float64)
            block_scores_into(col_off, r_off, nz_off, rp_off, ip, ix, dt, maps, float(self.w0_), self.w_, self.V_,
                              out, np.empty(R), np.empty((R, k)), np.empty((R, k)))
            return out
        indptr, indices, data = self._csr_arrays(M)
        if M.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        n_threads = resolve_threads(self.n_threads)
        n_chunks = max(1, min(M.shape[0], 4 * n_threads))
        with thread_limits(n_threads):
            return K.predict_raw(indptr, indices, data, float(self.w0_), self.w_, self.V_, n_chunks)

    def _clip(self, raw: np.ndarray) -> np.ndarray:
        if self.task == "regression" and self.clip_predictions:
            return np.clip(raw, self.y_range_[0], self.y_range_[1])
        return raw

    def decision_function(self, X: Any, *, user_features: Any = None, item_features: Any = None) -> np.ndarray:
        """Raw FM scores (logits for ``binary``), unclipped: the scores the index ranks by."""
        self._check_fitted()
        M, _ = self._as_matrix(X, None, fitting=False, user_features=user_features, item_features=item_features,
                               blocks=None)
        return self._raw(M)

    def predict(self, X: Any, *, user_features: Any = None, item_features: Any = None) -> np.ndarray:
        """Predictions: ratings (clipped to the training range) for regression,
        probabilities for binary, raw scores for ranking.  Users or items unseen in
        training are scored with their features (``user_features`` /
        ``item_features`` add rows for them) and contribute nothing else."""
        self._check_fitted()
        M, _ = self._as_matrix(X, None, fitting=False, user_features=user_features, item_features=item_features,
                               blocks=None)
        raw = self._raw(M)
        if self.task == "binary":
            return _probit(raw) if getattr(self, "link_", "logit") == "probit" else _sigmoid(raw)
        if self.task == "ranking":
            return raw
        return self._clip(raw)

    def score_pairs(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Raw FM scores for external (user, item) ID pairs."""
        self._check_fitted()
        if self.encoder_ is None:
            raise ConfigError("score_pairs needs a model fit on interactions (with ID maps)")
        return self._raw(self.encoder_.transform_ids(np.asarray(user_ids), np.asarray(item_ids)))

    # ------------------------------------------------------------- persistence
    def save(self, path: Any, **extra: Any) -> None:
        """Save to a model folder (see :mod:`fmrec.model.io`)."""
        from fmrec.model.io import save_model

        save_model(self, path, **extra)


def _probit(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(np.asarray(z, dtype=np.float64))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out
