"""A built-in, generated rating data set the size of MovieLens-100K.

``load_builtin()`` needs no download and no licence: 943 users, 1,682 items and
100,000 ratings (1..5) drawn from a planted low-rank model, so examples, tests and
the CLI's quick start work anywhere and a model can be checked against known
structure.  Same seed -> same bytes, on every platform (NumPy ``Generator`` with
``PCG64`` only; no threads, no hashing of Python objects).

How it is made:

* user activity varies (log-normal counts, at least 20 ratings each, at most
  ``MAX_PER_USER``), summing to exactly ``N_RATINGS``;
* items have Zipf-like popularity (``p ∝ (rank + 10) ** -ZIPF_EXPONENT``, ranks
  shuffled over item IDs), and each user rates distinct items drawn by popularity
  (Gumbel top-k); every item is rated at least once;
* a rating is ``global + b_u + b_i + <p_u, q_i> + noise`` (rank ``RANK`` factors),
  cut into 1..5 at fixed quantiles that mimic MovieLens (6/11/27/34/22 %);
* timestamps strictly increase down the rows (rows are in time order), starting
  in September 1997 like ml-100k;
* item titles are made up ("The Silent Harbor (1994)") from small word lists.
"""

from __future__ import annotations

import numpy as np

from fmrec.data._ids import IdMap
from fmrec.data.interactions import Interactions
from fmrec.errors import ConfigError

__all__ = ["load_builtin", "builtin_split", "N_USERS", "N_ITEMS", "N_RATINGS", "RANK"]

N_USERS = 943
N_ITEMS = 1682
N_RATINGS = 100_000
RANK = 8
MIN_PER_USER = 20
MAX_PER_USER = 740
ZIPF_EXPONENT = 1.0
START_TIME = 874_724_710  # 1997-09-20, the first ml-100k timestamp
#: Cumulative share of ratings at or below 1, 2, 3, 4 stars.
_RATING_CUTS = (0.06, 0.17, 0.44, 0.78)

_ADJECTIVES = (
    "Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Lonely", "Electric", "Frozen",
    "Burning", "Secret", "Wild", "Distant", "Forgotten", "Endless", "Savage", "Gentle", "Hollow", "Velvet",
    "Iron", "Restless", "Bitter", "Shining", "Empty", "Dark", "Little", "Northern", "Lucky", "Final",
)
_NOUNS = (
    "Harbor", "Summer", "Kingdom", "River", "Stranger", "Garden", "Promise", "Highway", "Mirror", "Island",
    "Winter", "Detective", "Empire", "Letter", "Horizon", "Orchard", "Machine", "Witness", "Valley", "Circus",
    "Frontier", "Lighthouse", "Carnival", "Voyage", "Signal", "Shadow", "Station", "Heart", "Storm", "Dancer",
)
_PLACES = (
    "Paris", "Memphis", "the Moon", "Tokyo", "Nowhere", "Brooklyn", "the North", "Avalon", "Casablanca",
    "Salt Lake", "the Sea", "Vienna",
)
_PEOPLE = ("Johnny", "Marlowe", "Mrs. Pemberton", "the Captain", "Rosa", "Dr. Kessler", "Lola", "Max", "Uncle Ned")


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct made-up film titles with a year, deterministic for ``rng``."""
    seen: set[str] = set()
    out: list[str] = []
    years = np.clip(np.round(1998 - rng.exponential(9.0, size=4 * n)), 1926, 1998).astype(int)
    k = 0
    while len(out) < n:
        form = int(rng.integers(0, 6))
        adj = _ADJECTIVES[int(rng.integers(0, len(_ADJECTIVES)))]
        noun = _NOUNS[int(rng.integers(0, len(_NOUNS)))]
        noun2 = _NOUNS[int(rng.integers(0, len(_NOUNS)))]
        if form == 0:
            base = f"The {adj} {noun}"
        elif form == 1:
            base = f"{adj} {noun}"
        elif form == 2:
            base = f"The {noun} of {_PLACES[int(rng.integers(0, len(_PLACES)))]}"
        elif form == 3:
            base = f"{_PEOPLE[int(rng.integers(0, len(_PEOPLE)))]} and the {adj} {noun}"
        elif form == 4:
            base = f"{noun} and {noun2}"
        else:
            article = "An" if adj[0] in "AEIOU" else "A"
            base = f"{article} {adj} {noun} in {_PLACES[int(rng.integers(0, len(_PLACES)))]}"
        base = base[0].upper() + base[1:]
        title = f"{base} ({years[k % years.size]})"
        k += 1
        if title in seen:
            # add a sequel number rather than loop for a new combination
            for part in ("II", "III", "IV", "V"):
                cand = f"{base} {part} ({years[k % years.size]})"
                if cand not in seen:
                    title = cand
                    break
            else:
                continue
        seen.add(title)
        out.append(title)
    return out


TASTE = 1.2  # weight of the planted taste in which items a user rates


def _user_counts(rng: np.random.Generator) -> np.ndarray:
    """Ratings per user: log-normal activity, >= MIN_PER_USER, summing to N_RATINGS."""
    raw = rng.lognormal(mean=0.0, sigma=1.1, size=N_USERS)
    extra_total = N_RATINGS - MIN_PER_USER * N_USERS
    extra = raw / raw.sum() * extra_total
    counts = MIN_PER_USER + np.floor(extra).astype(np.int64)
    counts = np.minimum(counts, MAX_PER_USER)
    # hand out the remainder one by one to the most active users below the cap
    short = N_RATINGS - int(counts.sum())
    order = np.argsort(-raw, kind="stable")
    while short > 0:
        for u in order:
            if counts[u] < MAX_PER_USER:
                counts[u] += 1
                short -= 1
                if short == 0:
                    break
    return counts


def load_builtin(seed: int = 0) -> Interactions:
    """The built-in data set: 943 users x 1,682 items, 100,000 integer ratings 1..5.

    External IDs are integers from 1 (users ``1..943``, items ``1..1682``); every
    user has at least 20 ratings and every item at least one.  Rows are in time
    order (strictly increasing ``timestamp``).  ``item_names`` maps each item ID to
    a made-up title.  Deterministic for ``seed``.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed!r}")
    rng = np.random.default_rng([int(seed), 0x464D52])  # "FMR"

    counts = _user_counts(rng)

    # item popularity: Zipf-like over shuffled ranks
    ranks = rng.permutation(N_ITEMS)
    log_pop = -ZIPF_EXPONENT * np.log(ranks + 10.0)

    # planted model
    scale = 1.0 / np.sqrt(RANK)
    P = rng.normal(0.0, scale, size=(N_USERS, RANK))
    Q = rng.normal(0.0, 1.0, size=(N_ITEMS, RANK))
    b_user = rng.normal(0.0, 0.45, size=N_USERS)
    # popular items are rated a little higher, as in MovieLens
    b_item = rng.normal(0.0, 0.45, size=N_ITEMS) + 0.25 * (log_pop - log_pop.mean()) / log_pop.std()

    # each user rates `counts[u]` distinct items, drawn by popularity (Gumbel top-k);
    # taste matters for what people choose to watch (as in MovieLens, where a
    # personalised ranker beats most-popular by 2x), so top-k models have signal
    keys = log_pop[None, :] + TASTE * (P @ Q.T) + rng.gumbel(size=(N_USERS, N_ITEMS))
    order = np.argsort(-keys, axis=1, kind="stable")
    take = np.arange(N_ITEMS)[None, :] < counts[:, None]
    users = np.repeat(np.arange(N_USERS, dtype=np.int64), counts)
    items = order[take].astype(np.int64)

    # every item rated at least once: give each unrated item a row of a popular item
    rated = np.zeros((N_USERS, N_ITEMS), dtype=bool)
    rated[users, items] = True
    n_per_item = np.bincount(items, minlength=N_ITEMS)
    missing = np.flatnonzero(n_per_item == 0)
    if missing.size:
        candidates = iter(rng.permutation(items.size).tolist())
        for j in missing.tolist():
            for r in candidates:
                i, u = int(items[r]), int(users[r])
                if n_per_item[i] > 1 and not rated[u, j]:
                    items[r] = j
                    rated[u, i], rated[u, j] = False, True
                    n_per_item[i] -= 1
                    n_per_item[j] += 1
                    break

    score = (b_user[users] + b_item[items] + np.einsum("nk,nk->n", P[users], Q[items])
             + rng.normal(0.0, 0.6, size=items.size))
    cuts = np.quantile(score, _RATING_CUTS)
    rating = (1 + np.searchsorted(cuts, score, side="left")).astype(np.float32)

    # time order: each user is active in a window; rows sorted by time, ties broken by draw
    start = rng.uniform(0.0, 0.9, size=N_USERS)
    length = rng.uniform(0.0, 0.1, size=N_USERS)
    when = start[users] + length[users] * rng.uniform(size=users.size)
    perm = np.argsort(when, kind="stable")
    users, items, rating = users[perm], items[perm], rating[perm]
    timestamp = START_TIME + np.cumsum(rng.integers(1, 300, size=users.size, dtype=np.int64))

    user_map = IdMap(np.arange(1, N_USERS + 1, dtype=np.int64))
    item_map = IdMap(np.arange(1, N_ITEMS + 1, dtype=np.int64))
    names_rng = np.random.default_rng([int(seed), 0x4E414D])  # "NAM"
    titles = _titles(names_rng, N_ITEMS)
    item_names = {int(i): t for i, t in zip(item_map.ids.tolist(), titles)}
    return Interactions(
        users, items, rating, user_map, item_map, timestamp, source=f"<builtin seed={seed}>", item_names=item_names
    )


def builtin_split(
    interactions: Interactions, test_per_user: int = 10, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Hold out ``test_per_user`` random ratings of every user (like MovieLens ``ua``).

    Returns ``(train, test)``, both with the same ID maps as ``interactions``.  A
    user with ``test_per_user`` ratings or fewer keeps one rating in training and
    puts the rest in the test set.  Deterministic for ``seed``.
    """
    if not isinstance(test_per_user, (int, np.integer)) or test_per_user < 1:
        raise ConfigError(f"test_per_user must be a positive integer, not {test_per_user!r}")
    rng = np.random.default_rng([int(seed), 0x53504C])  # "SPL"
    n = len(interactions)
    key = rng.random(n)
    order = np.lexsort((key, interactions.user_idx))
    users_sorted = interactions.user_idx[order]
    first = np.searchsorted(users_sorted, users_sorted, side="left")
    rank = np.arange(n) - first
    per_user = np.bincount(interactions.user_idx, minlength=interactions.n_users)
    k = np.minimum(test_per_user, np.maximum(per_user - 1, 0))
    is_test = np.zeros(n, dtype=bool)
    is_test[order] = rank < k[users_sorted]
    return interactions.subset(~is_test), interactions.subset(is_test)
