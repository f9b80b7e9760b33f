"""Loading and validating points: budgets, defaults, and one-line errors naming the column."""

import numpy as np
import pytest

from workbench.core.errors import WorkbenchError
from workbench.fit.points import data_hash, group_budgets, load_csv

GOOD = "params,tokens,loss\n1e8,1e9,3.1\n2e8,5e8,3.0\n4e8,2.5e8,3.2\n1e8,1e10,2.8\n"


def _csv(tmp_path, text, name="runs.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_budgets_grouped_within_5pct():
    flops = np.array([1e18, 1.03e18, 0.99e18, 1e19, 1.04e19, 3e19])
    labels = group_budgets(flops)
    assert len(np.unique(labels)) == 3
    assert labels[0] == labels[1] == labels[2] and labels[3] == labels[4] != labels[5]
    assert labels[0] == pytest.approx(1.0066e18, rel=1e-3)


def test_flops_default_to_6nd_and_budget_column_wins(tmp_path):
    points = load_csv(_csv(tmp_path, GOOD))
    assert np.allclose(points.flops, 6 * points.params * points.tokens)
    assert sorted(points.budget_flops.unique()) == pytest.approx([6e17, 6e18])
    with_budget = load_csv(_csv(tmp_path, "params,tokens,loss,budget\n1,2,3,1e18\n1,2,3,1e19\n", "b.csv"))
    assert sorted(with_budget.budget_flops.unique()) == [1e18, 1e19]


def test_hash_ignores_row_order(tmp_path):
    a = load_csv(_csv(tmp_path, GOOD))
    lines = GOOD.splitlines()
    b = load_csv(_csv(tmp_path, "\n".join([lines[0], *reversed(lines[1:])]) + "\n", "r.csv"))
    assert data_hash(a) == data_hash(b)
    b.loc[0, "loss"] += 0.01
    assert data_hash(a) != data_hash(b)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "the file is empty"),
        ("params,tokens,loss\n", r"no runs \(0 rows\)"),
        ("params,tokens\n1e8,1e9\n", "missing column 'loss'"),
        ("params,tokens,loss\n1e8,1e9,3\n1e8,1e10,-1\n", "column 'loss' row 2 has -1"),
        ("params,tokens,loss\n1e8,1e9,3\n1e8,1e10,\n", "column 'loss' row 2 has nan"),
        ("params,tokens,loss\n1e8,1e9,3\n2e8,5e8,3\n", r"one budget only \(6e\+17 FLOPs"),
        ("params,tokens,loss\nbig,1e9,3\n2e8,5e9,3\n", "column 'params' row 1 has 'big'"),
    ],
)
def test_bad_input_is_one_line_naming_the_column(tmp_path, text, match):
    with pytest.raises(WorkbenchError, match=match) as err:
        load_csv(_csv(tmp_path, text))
    assert "\n" not in str(err.value)
