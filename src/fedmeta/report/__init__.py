"""`fedmeta report`: see runs. PNG plots (accuracy and loss by round and by bytes
communicated, each held-out client's accuracy, epsilon by round) and one self-contained HTML
page comparing any number of runs: `runs` reads them, `plots` draws, `html` writes the page."""

from collections.abc import Sequence
from pathlib import Path

from fedmeta.atomic import write_atomic, write_atomic_bytes
from fedmeta.engine.rundir import make_directory
from fedmeta.errors import UserError
from fedmeta.report.html import render
from fedmeta.report.plots import draw_plots
from fedmeta.report.runs import read_runs


def write_report(paths: Sequence[Path], out: Path | None = None) -> Path:
    """Write the report of the runs in `paths` into `out` (default: the first run's `report/`):
    a PNG per plot and `index.html`, each written whole and then renamed into place (a plot
    no run has data for is removed); nothing else is changed. Returns the page's path."""
    runs = read_runs(paths)
    plots = draw_plots(runs)
    out = runs[0].path / "report" if out is None else out
    make_directory(out)
    try:
        for plot in plots:
            if plot.png is None:
                (out / f"{plot.name}.png").unlink(missing_ok=True)
            else:
                write_atomic_bytes(out / f"{plot.name}.png", plot.png)
        write_atomic(out / "index.html", render(runs, plots))
    except OSError as error:
        raise UserError(f"cannot write the report into {out}: {error.strerror}") from None
    return out / "index.html"
