"""The initkit tab in a real browser: TensorBoard on 127.0.0.1, headless Chromium (selenium).

Marked `browser` (tox -e browser). Without Chromium and chromedriver the tests skip,
except under CI (`CI` set), where a skipped browser test would hide a broken dashboard:
there they fail.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from keras_initkit.dashboard import fixtures

pytestmark = pytest.mark.browser
LAYERS, STEPS = 12, 9
WAIT_S = 120


def _missing(reason):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI: the browser test must run; tox -e browser installs it)")
    pytest.skip(reason)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chrome_driver():
    """A headless Chromium driven by the system chromedriver."""
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        _missing(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


def tensorboard(log_dir):
    """`tensorboard --logdir log_dir` on a free 127.0.0.1 port: `(url, process)`."""
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    command = [exe] if os.path.exists(exe) else [sys.executable, "-m", "tensorboard.main"]
    process = subprocess.Popen(
        command
        + [
            "--logdir",
            str(log_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    return f"http://127.0.0.1:{port}", process


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("browser_logs")
    names = fixtures.write_logs(log_dir, layers=LAYERS, steps=STEPS)
    return log_dir, names


@pytest.fixture(scope="module")
def server(logs):
    url, process = tensorboard(logs[0])
    yield url, process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def driver():
    driver = chrome_driver()
    yield driver
    driver.quit()


def _wait(predicate, what, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # not there yet: the page is still loading
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def open_dashboard(driver, url, process=None):
    """Open the initkit tab and switch into its iframe; waits for the heatmaps."""
    from selenium.webdriver.common.by import By

    def loaded():
        assert process is None or process.poll() is None, "tensorboard exited"
        driver.get(f"{url}/#initkit")
        return _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "iframe"), "iframe", 15)

    _wait(loaded, "the initkit tab")
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) >= 1, "heatmaps")
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".ik-findings-run"), "findings")


def legend_text(driver, containing):
    """The legend's text, once it holds `containing` (the metric's legend is drawn)."""
    from selenium.webdriver.common.by import By

    def text():
        legend = driver.find_element(By.CSS_SELECTOR, ".ik-legend").text
        return legend if containing in legend else None

    return _wait(text, f"a legend saying {containing!r}")


def open_report(driver, log_dir, metric=None, panels=1):
    """Write the HTML report of `log_dir`, open it (once it draws `panels` heatmaps)
    and show `metric`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from keras_initkit.dashboard import events, html

    path = html.write(events.read_logdir(log_dir), log_dir.parent / "report.html")
    driver.switch_to.default_content()
    driver.get(path.as_uri())
    _wait(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) >= panels,
        "the report's heatmaps",
    )
    if metric is not None:
        Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(metric)


def _open_std_ramp(driver, tmp_path, layers):
    """The HTML report of a run logging `activation_std` 1, 2, ... for `layers` at two steps."""
    from keras_initkit import summary

    writer = summary.EventFileSummaryWriter(tmp_path / "logs" / "initkit")
    writer.write_meta(0, layers=layers)
    for step in (0, 10):
        writer.write(step, scalars={f"activation_std/{n}": 1.0 + i for i, n in enumerate(layers)})
    writer.close()
    open_report(driver, tmp_path / "logs")


def axis_labels(driver):
    """Each heatmap's step-axis labels: `[(text, left, right), ...]` per panel, after
    checking that two labels of one axis neither overlap nor touch (too narrow an axis
    ran them together: "step 02 steps10")."""
    axes = driver.execute_script(
        """return [...document.querySelectorAll('.ik-axis')].map((axis) =>
          [...axis.children].map((s) => { const b = s.getBoundingClientRect();
            return [s.textContent, b.left, b.right]; }));"""
    )
    for spans in axes:
        for (a, _, a_right), (b, b_left, _) in zip(spans, spans[1:]):
            assert a_right + 4 <= b_left, f"axis labels {a!r} and {b!r} run together: {axes}"
    return axes


def test_heatmap_rows_columns_and_findings_in_the_browser(server, driver, logs, tmp_path):
    from selenium.webdriver.common.by import By

    url, process = server
    log_dir, names = logs
    open_dashboard(driver, url, process)
    canvases = driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")
    assert len(canvases) == len(fixtures.RUNS)  # the four runs side by side
    for canvas in canvases:
        assert int(canvas.get_attribute("data-rows")) == LAYERS
        assert int(canvas.get_attribute("data-cols")) == STEPS
        assert canvas.size["width"] > 0 and canvas.size["height"] > 0
    labels = driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")
    assert [label.get_attribute("title") for label in labels] == names["keras-default"]
    assert [[t for t, _, _ in spans] for spans in axis_labels(driver)] == [
        ["step 0", f"{STEPS} steps", str(5 * (STEPS - 1))]
    ] * len(fixtures.RUNS)

    rows = driver.find_elements(
        By.CSS_SELECTOR, '.ik-findings-run[data-run="keras-default/initkit"] tr.ik-finding'
    )
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [c[0] for c in cells] == ["saturated_fraction", "dead_fraction"]
    half = LAYERS // 2
    assert (
        cells[1][1] == f"{names['keras-default'][half]} – {names['keras-default'][-1]} "
        f"({LAYERS - half})"
    )
    assert cells[1][2] == "10" and cells[1][4] == fixtures.FIX_DEAD
    empty = driver.find_element(By.CSS_SELECTOR, '.ik-findings-run[data-run="lsuv/initkit"] h2')
    assert "no findings" in empty.text

    # Clicking a row label draws that layer's curve, one line per run.
    labels[3].click()
    curve = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve svg"), "curve")
    assert len(curve.find_elements(By.TAG_NAME, "polyline")) == len(fixtures.RUNS)
    # Hovering a cell names the layer, the step and the value.
    from selenium.webdriver.common.action_chains import ActionChains

    size = canvases[0].size  # offsets are from the element's centre
    ActionChains(driver).move_to_element_with_offset(
        canvases[0], 2 - size["width"] // 2, 2 - size["height"] // 2
    ).perform()
    tip = driver.find_element(By.CSS_SELECTOR, ".ik-tip")
    assert "dense_0" in tip.text and "step" in tip.text
    # Another metric: a log scale without a threshold.
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(
        "gradient_norm"
    )
    _wait(
        lambda: "log scale" in driver.find_element(By.CSS_SELECTOR, ".ik-legend").text,
        "the gradient_norm legend",
    )
    driver.save_screenshot(str(tmp_path / "dashboard.png"))


def test_html_report_draws_offline(driver, logs, tmp_path):
    """The `report --html` file draws the same heatmaps and findings from disk."""
    from selenium.webdriver.common.by import By

    from keras_initkit.dashboard import events, html

    runs = events.read_logdir(logs[0])
    path = html.write(runs, tmp_path / "report.html")
    driver.switch_to.default_content()
    driver.get(path.as_uri())
    _wait(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) == len(runs),
        "the report's heatmaps",
    )
    for canvas in driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap"):
        assert int(canvas.get_attribute("data-rows")) == LAYERS
    rules = [
        row.get_attribute("data-rule")
        for row in driver.find_elements(
            By.CSS_SELECTOR, '.ik-findings-run[data-run="keras-default/initkit"] tr.ik-finding'
        )
    ]
    assert rules == ["saturated_fraction", "dead_fraction"]
    # It opens on the earliest finding's metric (not the first metric: often blank).
    metric = driver.find_element(By.CSS_SELECTOR, "select.ik-metric").get_attribute("value")
    assert metric == "saturated_fraction"
    assert not driver.find_elements(By.CSS_SELECTOR, ".ik-reload")  # nothing to reload


UNJUDGED = [206, 190, 232]  # app.js: a value beyond a threshold its rule does not judge


def first_row_colours(driver):
    """The RGB of each cell of the heatmap's first row."""
    return driver.execute_script(
        """const c = document.querySelector('canvas.ik-heatmap');
        const cols = +c.dataset.cols, w = c.width / cols;
        return [...Array(cols).keys()].map((k) => Array.from(
          c.getContext('2d').getImageData(Math.floor((k + 0.5) * w), 0, 1, 1).data.slice(0, 3)));"""
    )


def hover_first_cell(driver):
    """The tooltip's text over the heatmap's first cell."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, "canvas.ik-heatmap")
    ActionChains(driver).move_to_element_with_offset(
        canvas, -canvas.size["width"] // 2 + 2, -canvas.size["height"] // 2 + 2
    ).perform()
    return _wait(
        lambda: (t := driver.find_element(By.CSS_SELECTOR, ".ik-tip").text) and t, "the tooltip"
    )


def test_a_branch_that_left_an_exemption_is_violet_before_on_that_side_only(driver, tmp_path):
    """A residual branch left the vanishing rule's exemption at step 20: its vanished
    ratios before then are violet, the same after are warm, and an exploding ratio
    before then is warm (that side was never exempt)."""

    from keras_initkit import summary

    writer = summary.EventFileSummaryWriter(tmp_path / "logs" / "initkit")
    writer.write_meta(
        0,
        layers=["branch"],
        thresholds={"gradient_ratio": 1e3},
        lower_thresholds={"gradient_ratio": 1e-3},
        exempt_until={"below": {"gradient_ratio": {"branch": 20}}},
    )
    for step, value in ((0, 1e-6), (10, 1e5), (20, 1e-6), (30, 0.5)):
        writer.write(step, scalars={"gradient_ratio/branch": value})
    writer.close()
    open_report(driver, tmp_path / "logs", "gradient_ratio")
    legend_text(driver, "violet")
    (r0, g0, b0), (r1, g1, b1), (r2, g2, b2), (r3, g3, b3) = first_row_colours(driver)
    assert [r0, g0, b0] == UNJUDGED  # step 0: exempt then
    assert r1 > b1 and [r1, g1, b1] != UNJUDGED  # step 10: exploding, judged
    assert r2 > b2 and [r2, g2, b2] != UNJUDGED  # step 20: vanished, judged
    assert b3 > r3  # step 30: healthy
    tip = hover_first_cell(driver)
    assert "step 0" in tip and "did not judge" in tip and "before step 20" in tip, tip


def test_thresholds_beyond_the_values_are_not_marked_at_the_bar_ends(driver, tmp_path):
    """Healthy gradient ratios (0.1 to 10) lie between both thresholds (1e-3, 1e3):
    marks clamped to the colour bar's ends read as thresholds at 0.1 and 10. The
    legend says where they lie instead, and the bar has no mark."""

    from keras_initkit import summary

    writer = summary.EventFileSummaryWriter(tmp_path / "logs" / "initkit")
    writer.write_meta(
        0,
        layers=["a", "b"],
        thresholds={"gradient_ratio": 1e3},
        lower_thresholds={"gradient_ratio": 1e-3},
    )
    for step in (0, 10):
        writer.write(step, scalars={"gradient_ratio/a": 0.1, "gradient_ratio/b": 10.0})
    writer.close()
    open_report(driver, tmp_path / "logs", "gradient_ratio")
    legend = legend_text(driver, "not on the bar")
    assert "0.001 lies below every value shown; 1000 lies above every value shown" in legend
    black = driver.execute_script(
        """const c = document.querySelector('canvas.ik-legend-bar');
        const d = c.getContext('2d').getImageData(0, 0, c.width, 1).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (!d[i] && !d[i + 1] && !d[i + 2]) n++;
        return n;"""
    )
    assert black == 0
    driver.save_screenshot(str(tmp_path / "off_scale.png"))


def test_values_before_the_step_a_rule_judges_from_are_violet_then_warm(driver, tmp_path):
    """Batch norm's mismatch rules wait while the initial moving statistics still weigh
    (the monitor finds `bn_init_weight` instead): the heatmap painted those cells warm."""
    from selenium.webdriver.common.by import By

    from keras_initkit import summary

    writer = summary.EventFileSummaryWriter(tmp_path / "logs" / "initkit")
    writer.write_meta(
        0,
        layers=["bn"],
        thresholds={"bn_mean_shift": 0.5},
        judged_from={"bn_mean_shift": {"bn": 20}},
        epoch_ends={"metrics": ["bn_mean_shift"], "steps": [20]},
    )
    for step in range(0, 40, 10):
        writer.write(step, scalars={"bn_mean_shift/bn": 2.0, "dead_fraction/bn": 0.0})
    writer.close()
    open_report(driver, tmp_path / "logs", "bn_mean_shift")
    legend_text(driver, "violet")
    rgb = first_row_colours(driver)
    assert rgb[:2] == [UNJUDGED, UNJUDGED], rgb  # steps 0 and 10: not judged yet
    (r, g, b) = rgb[2]
    assert r > b and [r, g, b] != UNJUDGED, rgb  # step 20, an epoch's end: warm
    assert rgb[3] == UNJUDGED, rgb  # step 30, inside the next epoch: not judged (yet)
    tip = hover_first_cell(driver)
    assert "step 0" in tip and "the rule judges this layer from step 20 on" in tip, tip
    # The layer's curve marks the same three values violet (it drew them as findings).
    driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")[0].click()
    curve = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve svg"), "curve")
    dots = curve.find_elements(By.CSS_SELECTOR, "circle.ik-unjudged")
    assert [
        d.find_element(By.TAG_NAME, "title").get_attribute("textContent")[:8] for d in dots
    ] == [
        "step 0: ",
        "step 10:",
        "step 30:",
    ]
    driver.save_screenshot(str(tmp_path / "judged_from.png"))


def test_lower_thresholds_colour_both_sides_and_draw_both_lines(driver, tmp_path):
    """Vanishing gradients (below the lower threshold) are as warm as exploding ones
    (above the upper threshold); a healthy layer in between stays cool, and so does a
    layer the vanishing rule exempts (`key`); the legend says so and a layer's curve
    shows both limits."""
    from selenium.webdriver.common.by import By

    from keras_initkit import summary

    layers = ["early", "key", "mid", "late"]
    writer = summary.EventFileSummaryWriter(tmp_path / "logs" / "initkit")
    writer.write_meta(
        0,
        layers=layers,
        thresholds={"gradient_ratio": 1e3},
        lower_thresholds={"gradient_ratio": 1e-3},
        exempt={"below": {"gradient_ratio": ["key"]}},
    )
    for step in (0, 10):
        writer.write(
            step,
            scalars={
                "gradient_ratio/early": 1e-6,
                "gradient_ratio/key": 1e-6,
                "gradient_ratio/mid": 0.5,
                "gradient_ratio/late": 1e5,
                "dead_fraction/mid": 0.0,
            },
        )
    writer.close()
    open_report(driver, tmp_path / "logs", "gradient_ratio")
    legend = legend_text(driver, "below the first")
    assert "thresholds 0.001 and 1000" in legend
    # Two steps: too narrow for three labels, which used to run together.
    assert [[t for t, _, _ in spans] for spans in axis_labels(driver)] == [["steps 0–10"]]
    rgb = driver.execute_script(
        """const c = document.querySelector('canvas.ik-heatmap');
        const rows = +c.dataset.rows, h = c.height / rows;
        return [...Array(rows).keys()].map((r) => Array.from(
          c.getContext('2d').getImageData(1, Math.floor((r + 0.5) * h), 1, 1).data.slice(0, 3)));"""
    )
    (er, eg, eb), (kr, kg, kb), (mr, mg, mb), (lr, lg, lb) = rgb
    assert er > eb and lr > lb, rgb  # warm: both findings
    assert mb > mr and (mr, mg, mb) != (kr, kg, kb), rgb  # cool: healthy
    assert [kr, kg, kb] == UNJUDGED, rgb  # beyond, but not judged: its own colour
    assert "violet: beyond a threshold where its rule does not judge" in legend
    driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")[2].click()
    curve = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve svg"), "curve")
    assert len(curve.find_elements(By.CSS_SELECTOR, "line.ik-limit")) == 2
    driver.save_screenshot(str(tmp_path / "lower_thresholds.png"))


def test_reload_follows_a_live_run(server, driver, logs):
    """A run that appears after the page loaded shows after Reload."""
    from selenium.webdriver.common.by import By

    url, process = server
    log_dir, _ = logs
    open_dashboard(driver, url, process)
    before = len(driver.find_elements(By.CSS_SELECTOR, ".ik-runs input"))
    fixtures.write_logs(log_dir, runs=("late",), layers=LAYERS, steps=2)

    def appeared():
        driver.find_element(By.CSS_SELECTOR, "button.ik-reload").click()
        time.sleep(1)
        return len(driver.find_elements(By.CSS_SELECTOR, ".ik-runs input")) == before + 1

    _wait(appeared, "the new run after Reload", 60)


def test_the_curve_keeps_each_runs_colour_and_its_layer_across_metrics(driver, tmp_path):
    """Found on EfficientNet runs: with the first run unticked, a curve was drawn in
    another run's colour; a row selected under one metric stayed selected by depth
    under the next, naming a layer never clicked (or none); at 800 px the curve ran
    off the window; a run's heading counted rules as "1 finding" for 49 layers."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from keras_initkit import summary

    for run in ("a", "b"):
        writer = summary.EventFileSummaryWriter(tmp_path / "logs" / run / "initkit")
        writer.write_meta(0, layers=["x", "y"], thresholds={"dead_fraction": 0.5})
        for step in (0, 10):
            writer.write(
                step,
                scalars={
                    "dead_fraction/x": 0.9,
                    "dead_fraction/y": 0.8,
                    "gradient_norm/y": 1.0 + step,
                    "attention_entropy/x": 0.5,
                },
            )
        writer.close()
    open_report(driver, tmp_path / "logs", "dead_fraction", panels=2)
    heading = _wait(
        lambda: (
            driver.find_element(By.CSS_SELECTOR, '.ik-findings-run[data-run="b/initkit"] h2').text
        ),
        "the findings of run b",
    )
    assert heading.startswith("b — 2 findings (1 rule)"), heading
    driver.find_element(By.CSS_SELECTOR, '.ik-runs input[value="a/initkit"]').click()
    labels = driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")
    labels[1].click()  # y
    title = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve h2").text, "curve")
    assert title == "dead_fraction of y (depth 1)"
    run_colour = driver.find_element(By.CSS_SELECTOR, ".ik-panel-title span").value_of_css_property(
        "color"
    )
    line = driver.find_element(By.CSS_SELECTOR, ".ik-curve polyline").get_attribute("stroke")
    assert line == "#e8710a" and run_colour == "rgba(232, 113, 10, 1)", (line, run_colour)
    Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(
        "gradient_norm"
    )
    _wait(
        lambda: (
            "gradient_norm of y (depth 0)"
            in driver.find_element(By.CSS_SELECTOR, ".ik-curve h2").text
        ),
        "the curve of y under gradient_norm",
    )
    Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(
        "attention_entropy"
    )  # only x logs it: no curve
    _wait(lambda: not driver.find_elements(By.CSS_SELECTOR, ".ik-curve h2"), "no curve")
    size = driver.get_window_size()
    try:
        driver.set_window_size(800, size["height"])
        Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(
            "dead_fraction"
        )
        driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")[0].click()
        curve = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve svg"), "curve")
        right = driver.execute_script("return arguments[0].getBoundingClientRect().right", curve)
        assert right <= driver.execute_script("return window.innerWidth"), right
    finally:
        driver.set_window_size(size["width"], size["height"])


def test_curve_title_names_the_layer_when_runs_differ_in_depth(driver, tmp_path):
    """A depth only the deeper run reaches: the curve is titled with that run's layer."""
    from selenium.webdriver.common.by import By

    # The shallow run first: the title used to read the first run's layer name.
    fixtures.write_logs(tmp_path / "logs", runs=("a-shallow",), layers=3, steps=4, seed=1)
    deep = fixtures.write_logs(tmp_path / "logs", runs=("b-deep",), layers=6, steps=4)
    open_report(driver, tmp_path / "logs")
    driver.find_elements(By.CSS_SELECTOR, ".ik-runs input")[1].click()  # another depth: unticked
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) == 2, "2 runs")
    labels = driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")
    labels[4].click()  # depth 4: only in the deep run
    title = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve h2"), "curve title")
    assert "undefined" not in title.text
    assert f"of {deep['b-deep'][4]} (depth 4)" in title.text
    curve = driver.find_element(By.CSS_SELECTOR, ".ik-curve svg")
    assert len(curve.find_elements(By.TAG_NAME, "polyline")) == 1


def test_runs_side_by_side_share_one_colour_scale(driver, tmp_path):
    """Two runs whose values lie decades apart: both heatmaps and the legend use one
    scale, so the same colour means the same value (each used its own range, and
    the legend showed the first run's)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from keras_initkit import summary
    from keras_initkit.dashboard import events, html

    for run, values in (("small", (0.1, 1.0)), ("large", (10.0, 100.0))):
        writer = summary.EventFileSummaryWriter(tmp_path / "logs" / run / "initkit")
        writer.write_meta(0, layers=["low", "high"])
        for step in (0, 10):
            writer.write(
                step,
                scalars={"activation_std/low": values[0], "activation_std/high": values[1]},
            )
        writer.close()
    path = html.write(events.read_logdir(tmp_path / "logs"), tmp_path / "report.html")
    driver.switch_to.default_content()
    driver.get(path.as_uri())
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) == 2, "maps")
    Select(driver.find_element(By.CSS_SELECTOR, "select.ik-metric")).select_by_value(
        "activation_std"
    )
    _wait(
        lambda: "activation_std" in driver.find_element(By.CSS_SELECTOR, ".ik-legend").text,
        "the activation_std legend",
    )
    canvases = driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")
    assert [c.get_attribute("data-scale") for c in canvases] == ["log 0.1 100"] * 2
    legend = driver.find_element(By.CSS_SELECTOR, ".ik-legend").text
    assert "0.1" in legend and "100" in legend, legend
    rgb = driver.execute_script(
        """return [...document.querySelectorAll('canvas.ik-heatmap')].map((c) => {
          const h = c.height / +c.dataset.rows;
          return [0, 1].map((r) => Array.from(c.getContext('2d')
            .getImageData(1, Math.floor((r + 0.5) * h), 1, 1).data.slice(0, 3)));
        });"""
    )
    (small_low, small_high), (large_low, large_high) = rgb
    # Four values on one log scale: four colours; the small run's largest (1.0) is
    # not drawn as the large run's largest (100), as it was on its own scale.
    assert len({tuple(c) for c in (small_low, small_high, large_low, large_high)}) == 4, rgb
    driver.save_screenshot(str(tmp_path / "shared_scale.png"))


def test_labels_fit_their_column_and_an_empty_selection_clears_the_page(driver, tmp_path):
    """Labels were cut at 150 px (and ran past the column on short rows); where runs
    named a depth differently the column showed the first run's name; deselecting every
    run left the last legend, curve and status on the page."""
    from selenium.webdriver.common.by import By

    from keras_initkit import summary

    long_name = "encoder_layer_11/self_attention/attention_output"
    too_long = f"{long_name}/{long_name}"  # beyond the column's 320 px: "…"
    for run, first in (("a", "embed"), ("b", "tokens")):
        layers = [first, long_name, too_long]
        writer = summary.EventFileSummaryWriter(tmp_path / "logs" / run / "initkit")
        writer.write_meta(0, layers=layers)
        for step in (0, 10):
            writer.write(step, scalars={f"activation_std/{n}": 1.0 for n in layers})
        writer.close()
    open_report(driver, tmp_path / "logs", panels=2)
    labels = driver.find_elements(By.CSS_SELECTOR, ".ik-rowlabel")
    assert [e.get_attribute("title") for e in labels] == [
        "0: embed / tokens",
        f"1: {long_name}",
        f"2: {too_long}",
    ]
    clipped, overflow = driver.execute_script(
        """const column = document.querySelector('.ik-labels').getBoundingClientRect();
        const spans = [...document.querySelectorAll('.ik-labeltext')];
        return [spans.map((s) => s.scrollWidth > s.clientWidth),
                spans.some((s) => s.getBoundingClientRect().right > column.right + 0.5)];"""
    )
    assert clipped == [False, False, True] and not overflow  # "…", never past the column
    driver.find_elements(By.CSS_SELECTOR, ".ik-rowlabel")[1].click()
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".ik-curve svg"), "the curve")
    for box in driver.find_elements(By.CSS_SELECTOR, ".ik-runs input"):
        box.click()
    _wait(lambda: "Select a run." in driver.find_element(By.CSS_SELECTOR, ".ik-grid").text, "")
    assert not driver.find_elements(By.CSS_SELECTOR, ".ik-legend, .ik-curve svg")
    assert driver.find_element(By.CSS_SELECTOR, ".ik-status").text == ""
    driver.save_screenshot(str(tmp_path / "empty.png"))


@pytest.mark.parametrize("row_height", [16, 12, 11, 10, 8, 4, 2])
def test_row_labels_keep_their_underscores_at_every_row_height(driver, tmp_path, row_height):
    """Rows 11 px high had labels with an 11 px line box and `overflow: hidden`: the
    font's descent was cut off, and `block_0_conv_0` read "block 0 conv 0" (as did
    every label of a 45-layer model in a 1000 px window). Every label's line box holds
    its text (nothing clipped), starts at its row and ends before the next label."""

    # app.js: rows of max(360, 0.6 × window height) / depth px, 16 at most.
    driver.get("about:blank")
    room = max(360, 0.6 * driver.execute_script("return window.innerHeight"))
    depth = int(room // row_height)
    layers = [f"block_{i // 3}_conv_{i % 3}" for i in range(depth)]
    _open_std_ramp(driver, tmp_path, layers)
    rows = driver.execute_script(
        """return [...document.querySelectorAll('.ik-rowlabel')].map((row) => {
          const text = row.querySelector('.ik-labeltext'), box = text.getBoundingClientRect();
          return {text: text.textContent, row: row.getBoundingClientRect().top,
                  height: row.getBoundingClientRect().height, top: box.top,
                  bottom: box.bottom, scroll: text.scrollHeight, client: text.clientHeight,
                  size: getComputedStyle(text).fontSize};
        });"""
    )
    assert {row["height"] for row in rows} == {row_height}
    labelled = [row for row in rows if row["text"]]
    assert labelled[0]["text"] == "block_0_conv_0" and len(labelled) >= depth // 6
    for label in labelled:
        assert label["scroll"] <= label["client"], f"clipped: {label}"
        assert label["top"] == label["row"], f"not at its row: {label}"
    for label, below in zip(labelled, labelled[1:]):
        assert label["bottom"] <= below["top"] + 0.01, f"{label} runs into {below}"
    driver.save_screenshot(str(tmp_path / "labels.png"))


def test_a_diverged_layer_is_black_not_grey(driver, tmp_path):
    """NaN and inf were drawn grey, as a value not logged; they are a diverged layer."""
    from selenium.webdriver.common.by import By

    from keras_initkit import summary

    writer = summary.EventFileSummaryWriter(tmp_path / "logs" / "initkit")
    writer.write_meta(0, layers=["a", "b", "c"])
    writer.write(0, scalars={"gradient_norm/a": 1.0, "gradient_norm/b": 2.0})
    writer.write(0, scalars={"gradient_norm/c": 0.0})  # no gradient: off the log scale
    writer.write(5, scalars={"gradient_norm/a": float("nan"), "gradient_norm/b": float("inf")})
    writer.write(7, scalars={"gradient_norm/a": 3.0})  # b not logged at step 7
    writer.close()
    open_report(driver, tmp_path / "logs", "gradient_norm")
    legend = _wait(
        lambda: (
            (t := driver.find_element(By.CSS_SELECTOR, ".ik-legend").text) and "black" in t and t
        ),
        "the legend",
    )
    assert "black: NaN or inf (diverged)" in legend
    assert "0 (off a log scale): as its lowest colour" in legend
    rgb = driver.execute_script(
        """const c = document.querySelector('canvas.ik-heatmap');
        const rows = +c.dataset.rows, cols = +c.dataset.cols;
        const w = c.width / cols, h = c.height / rows, ctx = c.getContext('2d');
        return [...Array(rows).keys()].map((r) => [...Array(cols).keys()].map((k) => Array.from(
          ctx.getImageData(Math.floor((k + 0.5) * w), Math.floor((r + 0.5) * h), 1, 1)
            .data.slice(0, 3))));"""
    )
    black, grey = [20, 20, 20], [236, 239, 241]
    assert rgb[0][1] == black and rgb[1][1] == black, rgb  # NaN, inf
    assert rgb[1][2] == grey, rgb  # not logged
    assert black not in (rgb[0][0], rgb[0][2], rgb[1][0]) and grey not in rgb[0], rgb


def test_a_click_on_a_short_row_label_selects_that_row(driver, tmp_path):
    """With rows lower than the text, a label's text runs down over its unlabelled
    neighbours, and a click there opened the curve of the labelled row above."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    layers = [f"layer_{i}" for i in range(120)]
    _open_std_ramp(driver, tmp_path, layers)
    labels = driver.find_elements(By.CSS_SELECTOR, ".ik-labels .ik-rowlabel")
    assert labels[0].size["height"] < 9 and labels[1].text == ""  # short rows, every k-th label
    for row in (1, 2):
        ActionChains(driver).move_to_element(labels[row]).click().perform()
        title = _wait(lambda: driver.find_element(By.CSS_SELECTOR, ".ik-curve h2").text, "curve")
        assert title.endswith(f"of layer_{row} (depth {row})"), title


def test_runs_of_another_model_are_listed_not_drawn_at_start(driver, tmp_path):
    """Every run in the directory was drawn at first (6 at most), unrelated models
    aligned by depth beside the one the user trained twice."""
    from selenium.webdriver.common.by import By

    fixtures.write_logs(tmp_path / "logs", runs=("a_he", "b_lsuv"), layers=4, steps=3)
    fixtures.write_logs(tmp_path / "logs", runs=("c_other",), layers=7, steps=3)
    open_report(driver, tmp_path / "logs", panels=2)
    boxes = driver.find_elements(By.CSS_SELECTOR, ".ik-runs input")
    assert [box.is_selected() for box in boxes] == [True, True, False]
    note = driver.find_element(By.CSS_SELECTOR, "div.ik-note").text
    assert "1 more run(s) not shown: tick them above." in note, note
    boxes[-1].click()
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) == 3, "3 runs")


def test_runs_left_unticked_at_start_are_announced(driver, tmp_path):
    """The first 6 runs are shown; a seventh was left out without a word."""
    from selenium.webdriver.common.by import By

    runs = tuple(f"run{i}" for i in range(7))
    fixtures.write_logs(tmp_path / "logs", runs=runs, layers=3, steps=3)
    open_report(driver, tmp_path / "logs", panels=6)
    boxes = driver.find_elements(By.CSS_SELECTOR, ".ik-runs input")
    assert [box.is_selected() for box in boxes] == [True] * 6 + [False]
    note = driver.find_element(By.CSS_SELECTOR, "div.ik-note").text
    assert "1 more run(s) not shown: tick them above." in note, note
    boxes[-1].click()
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "canvas.ik-heatmap")) == 7, "7 runs")
    assert "not shown" not in driver.find_element(By.CSS_SELECTOR, "div.ik-note").text
