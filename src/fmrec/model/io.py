"""Model folders: ``manifest.json`` + ``arrays.npz`` (+ ``seen.npz``, ``item_names.json``).

Nothing is pickled.  ``manifest.json`` records the format version, the library
versions, the estimator parameters, the field layout and a sha256 of every
file; :func:`load_model` verifies all of them and fails with a one-line
:class:`~fmrec.errors.ArtifactError` naming what is wrong.

``seen.npz`` holds the training interactions as a users x items CSR pattern so
that ``recommend`` can exclude seen items without the training file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from fmrec._artifacts import sha256_file, staged_folder
from fmrec.errors import ArtifactError

__all__ = ["save_model", "load_model", "load_seen", "load_item_names", "sha256_file"]

FORMAT = "fmrec-model"
FORMAT_VERSION = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):  # e.g. field_l2 (tuples come back as lists)
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def save_model(
    model: Any,
    path: Any,
    *,
    seen: sp.csr_matrix | None = None,
    item_names: dict[Any, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to the folder ``path`` atomically (temp folder + rename).

    ``seen``: users x items CSR of training interactions (internal indices).
    ``item_names``: external item id -> display name.
    """
    import numba

    import fmrec

    model._check_fitted()
    target = Path(path)
    with staged_folder(target) as tmp:
        arrays: dict[str, np.ndarray] = {
            "w0": np.array([model.w0_], dtype=np.float64),
            "w": np.asarray(model.w_, dtype=np.float32),
            "V": np.asarray(model.V_, dtype=np.float32),
        }
        enc = model.encoder_
        if enc is not None:
            arrays.update({f"map_{k}": v for k, v in enc.arrays().items()})
        np.savez(tmp / "arrays.npz", **arrays)
        files = ["arrays.npz"]
        if seen is not None:
            seen = sp.csr_matrix(seen)
            np.savez(
                tmp / "seen.npz",
                indptr=seen.indptr.astype(np.int64),
                indices=seen.indices.astype(np.int32),
                shape=np.array(seen.shape, dtype=np.int64),
            )
            files.append("seen.npz")
        if item_names:
            with open(tmp / "item_names.json", "w", encoding="utf-8") as fh:
                json.dump({str(k): v for k, v in item_names.items()}, fh, ensure_ascii=False)
            files.append("item_names.json")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fmrec_version": fmrec.__version__,
            "numpy_version": np.__version__,
            "numba_version": numba.__version__,
            "estimator": type(model).__name__,
            "params": {k: _jsonable(v) for k, v in model.get_params().items()},
            "n_features": int(model.n_features_in_),
            "y_range": list(model.y_range_),
            "link": getattr(model, "link_", "logit"),
            "n_samples": int(getattr(model, "n_samples_", 0)),
            "best_epoch": int(getattr(model, "best_epoch_", 0)),
            "history": model.history_,
            "layout": enc.layout() if enc is not None else None,
            "extra": extra or {},
            "checksums": {name: sha256_file(tmp / name) for name in files},
        }
        with open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
    return target


def _read_manifest(folder: Path) -> dict[str, Any]:
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: model folder not found")
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: manifest.json missing; not an fmrec model folder")
    try:
        with open(mpath, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: not an fmrec model manifest (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{mpath}: model format version {version!r} is newer than this fmrec supports ({FORMAT_VERSION}); "
            "upgrade fmrec"
        )
    for name, digest in manifest.get("checksums", {}).items():
        fpath = folder / name
        if not fpath.is_file():
            raise ArtifactError(f"{fpath}: file listed in the manifest is missing")
        actual = sha256_file(fpath)
        if actual != digest:
            raise ArtifactError(f"{fpath}: checksum mismatch (manifest {digest[:12]}..., file {actual[:12]}...)")
    return manifest


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: cannot read arrays ({exc})") from None


def load_model(path: Any) -> Any:
    """Load a model folder written by :func:`save_model`; verifies checksums and versions."""
    from fmrec.data.encode import Encoder
    from fmrec.model.fm import FactorizationMachine

    folder = Path(path)
    manifest = _read_manifest(folder)
    arrays = _load_npz(folder / "arrays.npz")
    try:
        params = manifest["params"]
        model = FactorizationMachine().set_params(
            **{k: v for k, v in params.items() if k in FactorizationMachine._get_param_names()}
        )
        model.w0_ = float(arrays["w0"][0])
        model.w_ = np.ascontiguousarray(arrays["w"], dtype=np.float32)
        model.V_ = np.ascontiguousarray(arrays["V"], dtype=np.float32)
        model.n_features_in_ = int(manifest["n_features"])
        model.y_range_ = tuple(manifest["y_range"])
        model.history_ = manifest.get("history", [])
        model.best_epoch_ = manifest.get("best_epoch", 0)
        model.link_ = manifest.get("link", "logit")
        if manifest.get("n_samples"):
            model.n_samples_ = int(manifest["n_samples"])
    except KeyError as exc:
        raise ArtifactError(f"{folder}: model is missing {exc}") from None
    if model.V_.shape[0] != model.n_features_in_ or model.w_.shape[0] != model.n_features_in_:
        raise ArtifactError(f"{folder}: array shapes {model.V_.shape} do not match n_features {model.n_features_in_}")
    if manifest.get("layout") is not None:
        maps = {k[4:]: v for k, v in arrays.items() if k.startswith("map_")}
        model.encoder_ = Encoder.from_arrays(maps, manifest["layout"])
    else:
        model.encoder_ = None
    model.manifest_ = manifest
    model.path_ = folder
    return model


def load_seen(path: Any) -> sp.csr_matrix | None:
    """The training interactions pattern saved with a model (or None)."""
    folder = Path(path)
    f = folder / "seen.npz"
    if not f.is_file():
        return None
    z = _load_npz(f)
    shape = tuple(int(s) for s in z["shape"])
    data = np.ones(len(z["indices"]), dtype=np.float32)
    return sp.csr_matrix((data, z["indices"], z["indptr"]), shape=shape)


def load_item_names(path: Any) -> dict[str, str]:
    f = Path(path) / "item_names.json"
    if not f.is_file():
        return {}
    with open(f, encoding="utf-8") as fh:
        return json.load(fh)
