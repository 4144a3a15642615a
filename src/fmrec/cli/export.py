"""``fmrec export``: a model's exact MIPS vectors as a ``vectors.npz`` any engine can score."""

from __future__ import annotations

import argparse

HELP = """Write the exact maximum-inner-product form of a saved model to an .npz file.

Arrays: user_ids, user_vectors ([p_u, 1]), item_ids, item_vectors ([q_i, b_i]),
user_constants (c_u: inner product + c_u = the model's score) and, when the
model folder has it, the training pattern seen_indptr / seen_indices (items to
exclude, users x items in file order).  Written with np.savez, no pickle:
string IDs are unicode arrays.  `fmrec recommend --vectors FILE` scores it;
so does any other engine (the layout is in fmrec.vectors).

example: fmrec export model --out vectors.npz
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a model's exact MIPS vectors to vectors.npz", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="vectors file to write (*.npz)")
    p.add_argument("--no-seen", action="store_true", help="leave the training pattern out of the file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from fmrec.errors import ConfigError
    from fmrec.model import load_model
    from fmrec.model.io import load_seen
    from fmrec.vectors import export_model_vectors, save_vectors

    if not str(args.out).endswith(".npz"):
        raise ConfigError(f"--out must end in .npz, got {args.out!r}")
    t0 = time.perf_counter()
    model = load_model(args.model_dir)
    seen = None if args.no_seen else load_seen(args.model_dir)
    vectors = export_model_vectors(model, seen=seen)
    if args.no_seen:
        vectors.seen = None
    save_vectors(args.out, vectors)
    print(f"wrote {vectors.n_users} users x {vectors.n_items} items x {vectors.dim} dims"
          f"{' + seen pattern' if vectors.seen is not None else ''} to {args.out} "
          f"in {time.perf_counter() - t0:.2f}s")
    return 0
