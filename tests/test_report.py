"""`fedmeta report`: reading run directories (finished, in progress, killed mid-write, bad),
plots of several runs, the HTML page (escaped, self-contained) and how Chromium renders it."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from fedmeta.cli import main
from fedmeta.report import write_report
from fedmeta.report.plots import PLOTS
from fedmeta.report.runs import read_run, read_runs

# Bundled Omniglot, a tiny Conv4, 2 rounds evaluated each, user-level DP (epsilon per round),
# held-out clients also personalized.
TINY = ["model.hidden=8", "server.rounds=2", "server.clients_per_round=2", "eval.every=1",
        "eval.episodes=10", "eval.final_episodes=20", "learner.local_steps=1",
        "eval.personalization_episodes=1",
        "server.sampling='poisson'", "privacy.clip_norm=1.0", "privacy.noise_multiplier=1.0"]
PNGS = {f"{plot.name}.png" for plot in PLOTS}
pytestmark = pytest.mark.filterwarnings("error")  # a warning would be a second line on stderr
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    assert main(["demo", "--quiet", "--out", str(out),
                 *[arg for item in TINY for arg in ("--set", item)]]) == 0
    return out


UNCOUNTED = {"bytes_down": None, "bytes_up": None}


def copy_run(run: Path, to: Path, *, name: str | None = None, summary: bool = True,
             **per_round) -> Path:
    """A copy of `run` under `to`, with another config name, without its summary (in progress)
    or with `per_round` set in every round's metrics (None: removed, as in a run of a version
    that did not record it)."""
    shutil.copytree(run, to)
    if name is not None:
        config = to / "config.toml"
        config.write_text(re.sub(r'(?m)^name = .*$', f"name = {json.dumps(name)}",
                                 config.read_text()))
    if not summary:
        (to / "summary.json").unlink()
    if per_round:
        rows = [{k: v for k, v in (json.loads(line) | per_round).items() if v is not None}
                for line in (to / "metrics.jsonl").read_text().splitlines()]
        (to / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return to


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_a_run_killed_mid_write_is_read_without_its_partial_last_line(finished, tmp_path):
    run = copy_run(finished, tmp_path / "killed", summary=False)
    with (run / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"round": 3, "clients": 2, "lo')
    read = read_run(run)
    assert [m["round"] for m in read.metrics] == [1, 2]
    assert read.summary is None and read.rounds == 2
    assert read.epsilon == json.loads((run / "metrics.jsonl").read_text().splitlines()[1])[
        "epsilon"]


def test_runs_are_labelled_by_name_and_by_directory_where_names_repeat(finished, tmp_path):
    other = copy_run(finished, tmp_path / "other", name="other")
    again = copy_run(finished, tmp_path / "again")
    assert [r.label for r in read_runs([finished, other])] == ["demo", "other"]
    assert [r.label for r in read_runs([finished, other, again])] == [
        "demo (finished)", "other", "demo (again)"]


def test_several_runs_in_one_figure_per_plot(finished, tmp_path):
    """A finished run, one counting bytes and one in progress: every plot is a PNG, the page
    embeds them all and notes which runs a plot lacks, and no run file changes."""
    uncounted = copy_run(finished, tmp_path / "uncounted", **UNCOUNTED)
    counted = copy_run(finished, tmp_path / "counted", name="counted", bytes_down=3000,
                       bytes_up=1000)
    running = copy_run(finished, tmp_path / "running", name="running", summary=False,
                       **UNCOUNTED)
    before = {run: files(run) for run in (uncounted, counted, running)}
    page = write_report([uncounted, counted, running], tmp_path / "report")
    assert page == tmp_path / "report" / "index.html"
    assert {p.name for p in page.parent.iterdir()} == PNGS | {"index.html"}
    for png in PNGS:
        with Image.open(page.parent / png) as image:
            assert image.format == "PNG" and image.size == (700, 400)
            image.verify()
    html = page.read_text()
    assert html.count('<img src="data:image/png;base64,') == len(PNGS)
    assert "Without demo, running: metrics.jsonl does not count the bytes" in html
    assert "Without running: no per-client accuracies in summary.json" in html
    assert "Without running: no per-client personalization accuracies" in html
    assert "in progress" in html and "finished" in html
    assert {run: files(run) for run in (uncounted, counted, running)} == before


def test_a_plot_no_run_has_data_for_is_a_note(finished, tmp_path):
    page = write_report([copy_run(finished, tmp_path / "uncounted", **UNCOUNTED)],
                        tmp_path / "report")
    assert not (tmp_path / "report" / "accuracy_vs_bytes.png").exists()
    assert ("Meta-test accuracy by bytes communicated: not drawn, no run has the data: "
            "metrics.jsonl does not count the bytes") in page.read_text()


def test_the_default_report_directory_is_in_the_first_run(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    assert main(["report", str(run), str(finished)]) == 0
    assert (run / "report" / "index.html").is_file()
    assert capsys.readouterr().out == f"wrote {run / 'report' / 'index.html'} and its plots\n"


def test_names_and_configs_are_escaped(finished, tmp_path):
    evil = '<script>alert("x")</script>'
    runs = [copy_run(finished, tmp_path / f"<b onclick=alert(1)>{i}", name=evil) for i in (0, 1)]
    (runs[0] / "config.toml").write_text((runs[0] / "config.toml").read_text()
                                         + f"# {evil} <img src=x>\n")
    html = write_report(runs, tmp_path / "report").read_text()
    assert "<script" not in html and "<b " not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; (&lt;b onclick=alert(1)&gt;0)" in html


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("corrupt, message", [
    (lambda run: shutil.rmtree(run), "is not a run directory (no config.toml)"),
    (lambda run: (run / "config.toml").unlink(), "is not a run directory (no config.toml)"),
    (lambda run: write(run / "config.toml", "name = [oops"), "config.toml is not a TOML config"),
    (lambda run: (run / "metrics.jsonl").unlink(), "has no complete round in metrics.jsonl yet"),
    (lambda run: write(run / "metrics.jsonl", ""), "has no complete round in metrics.jsonl yet"),
    (lambda run: write(run / "metrics.jsonl", '{"round": 1, "lo'),
     "has no complete round in metrics.jsonl yet"),
    (lambda run: write(run / "metrics.jsonl", '{"round": 1}\nnot json\n'),
     "metrics.jsonl: line 2 is not a round's metrics"),
    (lambda run: write(run / "metrics.jsonl", '[1, 2]\n'),
     "metrics.jsonl: line 1 is not a round's metrics"),
    (lambda run: write(run / "metrics.jsonl", f'{{"round": 1{"0" * 400}}}\n'),
     "metrics.jsonl: line 1 is not a round's metrics"),
    (lambda run: write(run / "summary.json", '{"rounds": '), "summary.json is not a JSON object"),
    (lambda run: write(run / "report", "a file"), "cannot create directory"),
])
def test_bad_input_exits_2_with_one_line(finished, tmp_path, capsys, corrupt, message):
    run = copy_run(finished, tmp_path / "run")
    corrupt(run)
    before = files(tmp_path)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedmeta: error: ") and err.count("\n") == 1 and message in err
    assert files(tmp_path) == before


NUMBERS = st.integers() | st.floats() | st.integers(min_value=-2**1100, max_value=2**1100)
JSON = st.recursive(st.none() | st.booleans() | NUMBERS | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=5)
METRICS = ("loss", "val_accuracy", "val_ci95", "epsilon", "bytes_down", "bytes_up")


def partly(keys: tuple[str, ...], values: st.SearchStrategy) -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({"round": st.integers(1, 10**6)},
                                           optional={key: NUMBERS | JSON for key in METRICS}),
                     min_size=1, max_size=3),
       meta_test=partly(("accuracy", "ci95", "per_client_accuracy",
                         "personal_per_client_accuracy"),
                        JSON | st.lists(NUMBERS, max_size=3)),
       summary=partly(("rounds", "train_seconds", "task", "privacy"), JSON))
def test_any_json_values_in_a_run_are_reported(finished, tmp_path_factory, rows, meta_test,
                                               summary):
    """Whatever JSON values a run's metrics (but its rounds) and summary hold (NaN, integers
    beyond a float's range, strings, lists...), the report is written, without a warning; what
    it cannot show is left out."""
    run = copy_run(finished, tmp_path_factory.mktemp("fuzz") / "run")
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run / "summary.json").write_text(json.dumps(summary | {"meta_test": meta_test}))
    assert write_report([run], run / "report").is_file()


class Resources(HTMLParser):
    """What a page would load: every src and href, and any script or stylesheet link."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.found.append(f"<{tag}>")
        self.found += [f"{name}={value}" for name, value in attrs if name in ("src", "href")]


def external_resources(html: str) -> list[str]:
    """What the page loads other than data: URIs (a self-contained page: nothing)."""
    parser = Resources()
    parser.feed(html)
    return [item for item in parser.found if not item.split("=", 1)[-1].startswith("data:")]


def render(page: Path, tmp_path: Path) -> tuple[Image.Image, list[str]]:
    """`page` as headless Chromium shows it in a 1200x2000 window, and the console messages it
    logged (a page without script logs none; an uncaught error would be one)."""
    shot = tmp_path / f"{page.stem}-screenshot.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / f'{page.stem}-profile'}",
         f"--screenshot={shot}", "--window-size=1200,2000", "--enable-logging=stderr", "--v=0",
         page.as_uri()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and shot.is_file(), result.stderr
    console = [line for line in result.stderr.splitlines()
               if re.search(r"CONSOLE|Uncaught|Failed to load resource", line)]
    with Image.open(shot) as image:
        return image.convert("RGB"), console


def blank(image: Image.Image) -> bool:
    """Nearly all one colour: fewer than 64 colours, or under 2% of pixels not white."""
    colours = image.getcolors(maxcolors=image.width * image.height)
    inked = sum(count for count, colour in colours if colour != (255, 255, 255))
    return len(colours) < 64 or inked < 0.02 * image.width * image.height


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no {CHROMIUM} (Debian's chromium; "
                    ".ci/run installs it with apt-get)")
def test_chromium_renders_the_report_without_a_console_error(finished, tmp_path):
    """The report, then two pages that show each check can fail: a blank one, and one that
    throws and loads a missing image."""
    counted = copy_run(finished, tmp_path / "counted", name="counted", bytes_down=10,
                       bytes_up=10)
    page = write_report([finished, counted], tmp_path / "report")
    assert external_resources(page.read_text()) == []
    image, console = render(page, tmp_path)
    assert console == [] and not blank(image)

    empty = write(tmp_path / "empty.html", "<!DOCTYPE html><html><body></body></html>")
    image, console = render(empty, tmp_path)
    assert console == [] and blank(image)
    broken = write(tmp_path / "broken.html", page.read_text().replace(
        "</body>", '<img src="missing.png"><script>throw new Error("broken")</script></body>'))
    assert external_resources(broken.read_text()) == ["src=missing.png", "<script>"]
    image, console = render(broken, tmp_path)
    assert len(console) == 1 and "Uncaught Error: broken" in console[0]
