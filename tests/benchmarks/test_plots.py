"""The Pareto plot of a zoo: every method on it, each with its own colour and marker."""

from __future__ import annotations

from featmux.benchmarks.plots import method_styles, pareto_figure
from featmux.benchmarks.report import CellRecord, aggregate


def test_every_method_of_a_zoo_gets_its_own_style():
    methods = [f"m{i}" for i in range(25)]
    assert len(set(method_styles(methods).values())) == 25  # more than tab20's colours: markers differ
    records = [
        CellRecord.from_result(
            {
                "dataset": "d",
                "model": "m",
                "embedding": method,
                "budget": budget,
                "seed": 0,
                "test_auc": 0.7 + 0.001 * i,
                "embedding_params": size,
                "embedding_bytes": 4 * size,
            }
        )
        for i, method in enumerate(["collisionless", *methods])
        for budget, size in ((("1", 1000),) if method == "collisionless" else (("1/4", 250), ("1/16", 62)))
    ]
    fig = pareto_figure(aggregate(records), "d / m")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(["collisionless", *methods])
    drawn = {
        (tuple(line.get_color()), line.get_marker()) for line in ax.get_lines() if line.get_linestyle() == "-"
    }
    assert len(drawn) == 25  # one distinct line per budgeted method
