"""The report as one self-contained HTML page: a table comparing the runs, the plots as
base64 PNG images and each run's config.toml. No external resource, no script; every text
from a run (names, paths, configs) is escaped."""

from base64 import b64encode
from collections.abc import Sequence
from html import escape

from fedmeta.report.plots import Plot
from fedmeta.report.runs import Run, is_number

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
pre { background: #f5f5f5; padding: 1em; overflow-x: auto; }
.note { color: #666; }
"""
COLUMNS = ("run", "directory", "status", "rounds", "task", "meta-test accuracy (95% CI)",
           "train time", "epsilon")
NONE = "—"


def percent(value: object) -> str:
    return f"{100 * value:.2f}%" if is_number(value) else NONE


def summary_row(run: Run) -> tuple[str, ...]:
    """The summary table's cells for `run`: its final results, or how far it got."""
    accuracy = run.summary_field("meta_test", "accuracy")
    ci95 = run.summary_field("meta_test", "ci95")
    if is_number(ci95):
        accuracy_text = f"{percent(accuracy)} ± {percent(ci95)}"
    else:
        accuracy_text = percent(accuracy)
    seconds = run.summary_field("train_seconds")
    task = run.summary_field("task")
    return (run.label, str(run.path), "finished" if run.summary is not None else "in progress",
            str(run.rounds), task if isinstance(task, str) else NONE, accuracy_text,
            f"{seconds:.1f} s" if is_number(seconds) else NONE,
            NONE if run.epsilon is None else f"{run.epsilon:.3g}")


def table(runs: Sequence[Run]) -> str:
    header = "".join(f"<th>{escape(column)}</th>" for column in COLUMNS)
    rows = ["<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in summary_row(run)) + "</tr>"
            for run in runs]
    return "\n".join(["<table>", f"<tr>{header}</tr>", *rows, "</table>"])


def figure(plot: Plot) -> str:
    """The plot as an embedded image, with a note on the runs it lacks, or just the note."""
    if plot.png is None:
        return (f'<p class="note">{escape(plot.title)}: not drawn, no run has the data: '
                f"{escape(plot.reason)}.</p>")
    image = b64encode(plot.png).decode("ascii")
    html = f'<figure><img src="data:image/png;base64,{image}" alt="{escape(plot.title)}">'
    if plot.missing:
        html += (f'<figcaption class="note">Without {escape(", ".join(plot.missing))}: '
                 f"{escape(plot.reason)}.</figcaption>")
    return html + "</figure>"


def config(run: Run) -> str:
    return (f"<h3>{escape(run.label)}</h3>\n<p>{escape(str(run.path / 'config.toml'))}</p>\n"
            f"<pre>{escape(run.config_text)}</pre>")


def render(runs: Sequence[Run], plots: Sequence[Plot]) -> str:
    """The report page for `runs` and their `plots`."""
    title = "fedmeta report: " + ", ".join(run.label for run in runs)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>", "<h2>Summary</h2>", table(runs), "<h2>Plots</h2>",
        *(figure(plot) for plot in plots), "<h2>Configs</h2>", *(config(run) for run in runs),
        "</body>", "</html>", ""])
