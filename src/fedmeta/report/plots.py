"""The report's plots as PNG images: one figure per plot, a line (or histogram) per run, drawn
on matplotlib's Agg canvas (no display, no pyplot state)."""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from io import BytesIO

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

from fedmeta.report.runs import Run


@dataclass(frozen=True)
class Plot:
    name: str  # the PNG's file name, without .png
    title: str
    png: bytes | None  # None: no run has the data
    missing: tuple[str, ...]  # labels of the runs without the data
    reason: str  # why a run may have no data


@dataclass(frozen=True)
class Curve:
    """A metric of every round that logs it, against the round or the bytes communicated."""

    name: str
    title: str
    key: str  # in metrics.jsonl
    ylabel: str
    reason: str
    scale: float = 1.0  # e.g. 100 for a percentage
    band: str | None = None  # a half-width shaded around the line (a 95% CI)
    against_bytes: bool = False

    def points(self, run: Run) -> list[tuple[float, ...]]:
        """(x, y[, band]) of `run`, scaled; none if it lacks the metric (or byte counts)."""
        rows = run.rows(self.key) if self.band is None else run.rows(self.key, self.band)
        if self.against_bytes:
            communicated = run.bytes_communicated()
            if communicated is None:
                return []
            rows = [(communicated[r], *values) for r, *values in rows]
        return [(x, *(self.scale * v for v in values)) for x, *values in rows]

    def draw(self, runs: Sequence[Run]) -> Plot:
        figure, axes = new_figure(self.title, "bytes communicated (to and from clients)"
                                  if self.against_bytes else "round", self.ylabel)
        if self.against_bytes:
            axes.xaxis.set_major_formatter(EngFormatter(unit="B"))
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        missing = []
        for color, run in colored(runs):
            points = self.points(run)
            if not points:
                missing.append(run.label)
                continue
            x, y, *band = zip(*points)
            axes.plot(x, y, marker="o", markersize=3, color=color, label=run.label)
            if band:
                axes.fill_between(x, [a - b for a, b in zip(y, band[0])],
                                  [a + b for a, b in zip(y, band[0])],
                                  color=color, alpha=0.2, linewidth=0)
        return finish(self, figure, axes, runs, missing)


@dataclass(frozen=True)
class Histogram:
    """Each held-out client's final accuracy (`Run.per_client(key)`), a histogram per run."""

    name: str
    title: str
    key: str
    reason: str

    def draw(self, runs: Sequence[Run]) -> Plot:
        figure, axes = new_figure(self.title, "accuracy (%)", "held-out clients")
        missing = []
        for color, run in colored(runs):
            values = run.per_client(self.key)
            if values is None:
                missing.append(run.label)
                continue
            axes.hist([100 * v for v in values], bins=20, range=(0, 100), histtype="stepfilled",
                      color=color, alpha=0.4, edgecolor=color, label=run.label)
        return finish(self, figure, axes, runs, missing)


ACCURACY = Curve("accuracy_vs_round", "Meta-validation accuracy by round", "val_accuracy",
                 "meta-validation accuracy (%, 95% CI)",
                 "no evaluation logged during training (eval.every, meta-validation clients)",
                 100.0, "val_ci95")
LOSS = Curve("loss_vs_round", "Training loss by round", "loss", "training loss (clients' mean)",
             "no round in which a client reported")
NO_BYTES = "metrics.jsonl does not count the bytes communicated (bytes_down, bytes_up)"
PLOTS = (
    ACCURACY,
    LOSS,
    replace(ACCURACY, name="accuracy_vs_bytes", title="Meta-test accuracy by bytes communicated",
            reason=NO_BYTES, against_bytes=True),
    replace(LOSS, name="loss_vs_bytes", title="Training loss by bytes communicated",
            reason=NO_BYTES, against_bytes=True),
    Histogram("per_client_accuracy", "Final meta-test accuracy of each held-out client",
              "per_client_accuracy", "no per-client accuracies in summary.json (a run in "
              "progress, or one summarized before they were recorded)"),
    Histogram("personal_per_client_accuracy",
              "Personalization accuracy of each held-out client (its own split)",
              "personal_per_client_accuracy", "no per-client personalization accuracies in "
              "summary.json (eval.personalization_episodes = 0, or a run in progress)"),
    Curve("epsilon_vs_round", "Privacy spent by round (user-level DP)", "epsilon", "epsilon",
          "no user-level DP noise (no epsilon in metrics.jsonl)"),
)


def colored(runs: Sequence[Run]) -> list[tuple[str, Run]]:
    """Each run with its colour, the same in every plot."""
    return [(f"C{i}", run) for i, run in enumerate(runs)]


def new_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def finish(plot: Curve | Histogram, figure: Figure, axes: Axes, runs: Sequence[Run],
           missing: list[str]) -> Plot:
    """The drawn figure as PNG bytes (none if every run is `missing`)."""
    if len(missing) == len(runs):
        return Plot(plot.name, plot.title, None, tuple(missing), plot.reason)
    axes.legend()
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return Plot(plot.name, plot.title, buffer.getvalue(), tuple(missing), plot.reason)


def draw_plots(runs: Sequence[Run]) -> list[Plot]:
    """Every plot of the report, for `runs` in one figure each."""
    return [plot.draw(runs) for plot in PLOTS]
