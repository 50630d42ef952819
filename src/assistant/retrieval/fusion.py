"""Fusion of per-retriever unit scores into one ranking (plain numpy, no state)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

Ranked = list[tuple[int, float]]


def top_positions(scores: np.ndarray, depth: int) -> np.ndarray:
    """Positions of the ``depth`` best scores, best first (ties broken by position)."""
    return np.lexsort((np.arange(scores.size), -scores))[:depth]


def reciprocal_rank(scores: Mapping[str, np.ndarray], weights: Mapping[str, float], k: int, depth: int,
                    tops: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Weighted RRF: sum of w / (k + rank) over the retrievers that rank a unit in their top ``depth``.

    A unit a retriever scores 0 or less (no query word in BM25, not among a follow-up's earlier
    citations) is not in that retriever's list: ranking ties of nothing would be noise.
    """
    size = next(iter(scores.values())).size
    fused = np.zeros(size, dtype=np.float64)
    for name, values in scores.items():
        listed = _listed(values, tops[name] if tops is not None else top_positions(values, depth))
        fused[listed] += weights.get(name, 1.0) / (k + np.arange(1, listed.size + 1))
    return fused


def _listed(values: np.ndarray, top: np.ndarray) -> np.ndarray:
    """The positions of ``top`` (best first) a retriever really lists: those it scores above 0."""
    return top[: int(np.count_nonzero(values[top] > 0))]  # best first: the positive ones are a prefix


def normalised_score(scores: Mapping[str, np.ndarray], weights: Mapping[str, float], depth: int) -> np.ndarray:
    """Weighted sum of min-max normalised scores (each retriever's top ``depth`` count)."""
    size = next(iter(scores.values())).size
    fused = np.zeros(size, dtype=np.float64)
    for name, values in scores.items():
        positions = top_positions(values, depth)
        low, high = float(values.min()), float(values[positions[0]])
        span = high - low or 1.0
        fused[positions] += weights.get(name, 1.0) * (values[positions] - low) / span
    return fused


def fuse(scores: Mapping[str, np.ndarray], weights: Mapping[str, float],
         method: Literal["rrf", "score"] = "rrf", k: int = 60, depth: int = 30,
         ) -> tuple[Ranked, dict[int, dict[str, int]]]:
    """One ranked list of (unit position, fused score) and, per unit, the retrievers' ranks."""
    if not scores:
        return [], {}
    tops = {name: top_positions(values, depth) for name, values in scores.items()}
    fused = (reciprocal_rank(scores, weights, k, depth, tops) if method == "rrf"
             else normalised_score(scores, weights, depth))
    ranks: dict[int, dict[str, int]] = {}
    for name, values in scores.items():
        for rank, position in enumerate(_listed(values, tops[name]).tolist(), start=1):
            ranks.setdefault(position, {})[name] = rank
    order = top_positions(fused, fused.size)
    order = order[: int(np.count_nonzero(fused[order] > 0))]
    return list(zip(order.tolist(), fused[order].tolist(), strict=True)), ranks
