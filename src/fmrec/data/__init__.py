"""Loading, encoding and splitting interaction data."""

from fmrec.data._ids import IdMap
from fmrec.data.interactions import DUPLICATE_POLICIES, Interactions

__all__ = ["IdMap", "Interactions", "DUPLICATE_POLICIES"]

from fmrec.data.datasets import DATASETS, dataset_path, fetch_dataset, protocol_files, ratings_file  # noqa: E402
from fmrec.data.readers import read_interactions, read_item_names  # noqa: E402
from fmrec.data.synthetic import builtin_split, load_builtin  # noqa: E402

__all__ += [
    "read_interactions",
    "read_item_names",
    "load_builtin",
    "builtin_split",
    "DATASETS",
    "fetch_dataset",
    "dataset_path",
    "protocol_files",
    "ratings_file",
]
