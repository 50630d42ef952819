"""The report's charts: ``retrievers.png`` (metrics per configuration), ``breakdown.png`` (nDCG@10 by group)."""

from __future__ import annotations

from pathlib import Path

from assistant.evaluation.ablation import DEFAULT
from assistant.evaluation.metrics import MAIN_METRIC
from assistant.evaluation.results import EvalResults

CHART_METRICS = ("NDCG@10", "Recall@1", "Recall@5", "Recall@10", "MRR@10")


def write_charts(results: EvalResults, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = results.retrieval.configs
    names = list(configs)
    figure, axis = plt.subplots(figsize=(max(8.0, 1.1 * len(names) + 3), 4.5))
    width = 0.8 / len(CHART_METRICS)
    for i, metric in enumerate(CHART_METRICS):
        values = [configs[n].metrics.get(metric, 0.0) for n in names]
        axis.bar([x + i * width for x in range(len(names))], values, width, label=metric)
    axis.set_xticks([x + width * (len(CHART_METRICS) - 1) / 2 for x in range(len(names))], names, rotation=25,
                    ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("score")
    axis.set_title(f"Retrieval by configuration ({results.split} split)")
    axis.legend(fontsize=8, ncols=len(CHART_METRICS), loc="upper center", bbox_to_anchor=(0.5, -0.3))
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "retrievers.png", dpi=120)
    plt.close(figure)

    breakdown = results.retrieval.breakdown
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 3]})
    for axis, dimension in zip(axes, ("lang", "type"), strict=True):
        groups = breakdown.get(dimension) or {}
        labels = [f"{k}\n(n={v.n})" for k, v in groups.items()]
        values = [v.metrics.get(MAIN_METRIC, 0.0) for v in groups.values()]
        axis.bar(range(len(values)), values, color="tab:blue" if dimension == "lang" else "tab:green")
        axis.set_xticks(range(len(values)), labels, rotation=30 if dimension == "type" else 0, fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_title(f"{MAIN_METRIC} by {'language' if dimension == 'lang' else 'type'}")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{DEFAULT}, {results.split} split")
    figure.tight_layout()
    figure.savefig(folder / "breakdown.png", dpi=120)
    plt.close(figure)
