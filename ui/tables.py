"""Rich tables for results."""
from __future__ import annotations

from rich.table import Table

from pruning.budget import format_params


def comparison_table(title: str, rows: list[dict]) -> Table:
    """rows: {"name", "total", "blocks", "ppl"}; the first row is the reference (dense)."""
    table = Table(title=title)
    for column, justify in (("model", "left"), ("params", "right"), ("block params", "right"),
                            ("share of dense", "right"), ("WikiText-2 test PPL", "right")):
        table.add_column(column, justify=justify)
    dense_total = rows[0]["total"]
    for row in rows:
        ppl = row.get("ppl")
        table.add_row(row["name"], format_params(row["total"]), format_params(row["blocks"]),
                      f"{row['total'] / dense_total:.1%}", "-" if ppl is None else f"{ppl:.2f}")
    return table


def rates_line(rates: list[float]) -> str:
    """Per-layer rates as a compact sparkline plus min/mean/max."""
    bars = " ▁▂▃▄▅▆▇█"
    spark = "".join(bars[min(8, max(0, int(round(r * 8))))] for r in rates)
    mean = sum(rates) / len(rates)
    return f"{spark}  min {min(rates):.3f}  mean {mean:.3f}  max {max(rates):.3f}"
