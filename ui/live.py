"""Live view of a running search: generation progress, best/mean fitness, role outcomes."""
from __future__ import annotations

from collections import Counter, defaultdict

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ui.console import err_console, log_line


class SearchView:
    def __init__(self, title: str, generations: int):
        self.title, self.generations = title, generations
        self.rows: list[dict] = []
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.status = "starting"
        self.live = Live(self.render(), console=err_console, refresh_per_second=4, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self.render())
        self.live.__exit__(*exc)

    def on_event(self, kind: str, data: dict) -> None:
        if kind == "proposed":
            for call in data["calls"]:
                if call["outcome"] in ("used", "repaired", "retried", "fallback"):
                    self.outcomes[call["role"]][call["outcome"]] += 1
            self.status = f"{data['count']} new candidate(s)"
        elif kind == "evaluated":
            how = "cached" if data["cached"] else f"{data['seconds']:.1f} s"
            what = "champion on the fixed windows" if data.get("stage") == "champion" else "evaluating"
            self.status = f"{what} {data['done']}/{data['total']}: fitness {data['fitness']:.3f} ({how})"
        elif kind == "generation":
            self.rows.append(data)
            log_line(f"generation {data['generation']}: best {data['best']:.4f}, mean {data['mean']:.4f}, "
                     f"diversity {data['diversity']:.3f}, {data['evaluations']} evaluations")
            self.status = "done" if data["done"] else f"generation {data['generation'] + 1} of {self.generations}"
        self.live.update(self.render())

    def on_node(self, node: str, _values: dict) -> None:
        self.status = f"{node} finished"
        self.live.update(self.render())

    def render(self) -> Group:
        gens = Table(title=self.title, expand=False)
        for col in ("generation", "best", "mean", "diversity", "evaluations"):
            gens.add_column(col, justify="right")
        for row in self.rows[-10:]:
            gens.add_row(str(row["generation"]), f"{row['best']:.3f}", f"{row['mean']:.3f}",
                         f"{row['diversity']:.3f}", str(row["evaluations"]))
        roles = Table(title="agent answers", expand=False)
        for col in ("role", "used", "repaired", "retried", "fallback"):
            roles.add_column(col, justify="right")
        for role, counts in self.outcomes.items():
            roles.add_row(role, *(str(counts[k]) for k in ("used", "repaired", "retried", "fallback")))
        return Group(gens, roles, Text(self.status, style="dim"))
