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
        top = tops[name] if tops is not None else top_positions(values, depth)
        for rank, position in enumerate(top, start=1):
            if values[position] <= 0:
                break
            fused[position] += weights.get(name, 1.0) / (k + rank)
    return fused


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
        for rank, position in enumerate(tops[name], start=1):
            if values[position] > 0:
                ranks.setdefault(int(position), {})[name] = rank
    candidates = [p for p in top_positions(fused, fused.size) if fused[p] > 0]
    return [(int(p), float(fused[p])) for p in candidates], ranks
