"""The demo study's report in a real browser: headless Chromium (Debian's), driven by Selenium, offline.

A small run of the demo sweep (sweeps/demo.yaml, as `make demo` runs it, with a smaller budget) is
reported with `flexcnn report`; Chromium opens the page from disk with name resolution and the
proxy pointing nowhere, and the test reads what a person would see: every section with real
content, no JavaScript error, no request that left file://, and a leaderboard that sorts when a
header is clicked. It saves a full-page screenshot (and copies it to $FLEXCNN_REPORT_SCREENSHOT
when that is set). A two-objective study made with Optuna's API from the demo's own trial folders
shows its Pareto front in the same browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from flexcnn.search.storage import open_storage, parse_storage
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# What an offline page may load: itself and its inline data.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
FIGURES = ("history", "parallel", "importance", "learning", "roc")
DEMO_TRIALS = 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo sweep run as `make demo` does (2 workers), 5 trials, then `flexcnn report` on it."""
    tmp = tmp_path_factory.mktemp("demo")
    storage, study = str(tmp / "optuna-demo.log"), "demo-browser"
    env = {**os.environ, "FLEXCNN_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    optuna_run = [
        *("optuna", "run", "sweeps/demo.yaml", "--study", study, "--storage", storage),
        *("--workers", "2", "--n-trials", str(DEMO_TRIALS), "--seed", "0", "--wandb-mode", "disabled"),
        *("--output-dir", str(tmp / "runs")),
    ]
    proc = _flexcnn(*optuna_run, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = time.perf_counter()
    proc = _flexcnn("report", "--storage", storage, "--study", study, env=env)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = tmp / "runs" / study / "report.html"
    assert f"report: {page} (" in proc.stdout  # the path is printed
    loaded = optuna.load_study(study_name=study, storage=open_storage(parse_storage(storage), create=False))
    return {"page": page, "study": loaded, "tmp": tmp, "seconds": seconds}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with networking blocked: no name resolves, every proxied request goes nowhere."""
    assert CHROMIUM and CHROMEDRIVER, "apt-get install chromium chromium-driver (.ci/run installs them)"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
    for flag in [*flags.split(), "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")
    options.add_argument("--proxy-server=http://127.0.0.1:9")  # the discard port: nothing listens
    options.add_argument("--proxy-bypass-list=<-loopback>")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(180)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, url: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Load ``url``; the URLs it requested and the console's entries, from this load only."""
    driver.get("about:blank")
    driver.get_log("performance"), driver.get_log("browser")  # drain: the start page's own requests
    driver.get(url)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.readyState") == "complete")
    time.sleep(0.5)  # plotly finishes drawing in animation frames
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    return urls, driver.get_log("browser")


def test_blocked_network_is_noticed(browser: Any, tmp_path: Path) -> None:
    """The checks below can fail: a page that fetches from the web shows up, and gets nothing."""
    page = tmp_path / "online.html"
    page.write_text('<html><body><img id="i" src="http://example.com/x.png"></body></html>')
    urls, _ = open_page(browser, page.as_uri())
    assert "http://example.com/x.png" in urls
    assert browser.execute_script("return document.getElementById('i').naturalWidth") == 0


def test_demo_report_in_a_browser(browser: Any, demo: dict[str, Any]) -> None:
    page: Path = demo["page"]
    study: optuna.Study = demo["study"]
    urls, console = open_page(browser, page.as_uri())
    assert urls and all(u.startswith(LOCAL_SCHEMES) for u in urls), [u[:80] for u in urls]
    assert [e for e in console if e["level"] == "SEVERE"] == []

    js = browser.execute_script
    text = js("return document.getElementById('overview').innerText")
    assert "name: demo" in text and f"{DEMO_TRIALS} trials" in text and "sampler" in text
    rows = js("return Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.id)")
    assert sorted(rows) == sorted(f"trial-{t.number}" for t in study.trials)
    for key in FIGURES:
        drawn = js(
            "var d = document.getElementById(arguments[0]); var s = d && d.querySelector('.main-svg');"
            "return d && s ? [d.data.length, s.getBoundingClientRect().height] : null",
            f"fig-{key}",
        )
        assert drawn is not None and drawn[0] > 0 and drawn[1] > 200, (key, drawn)
    _check_learning_curves(js, study)
    confusion = js(
        "var i = document.getElementById('confusion'); return [i.complete, i.naturalWidth, i.src.slice(0, 22)]"
    )
    assert confusion[0] and confusion[1] > 200 and confusion[2] == "data:image/png;base64,"
    assert js("return document.querySelectorAll('#per-class tbody tr').length") == 10
    reproduce = js("return document.getElementById('reproduce').innerText")
    assert "flexcnn optuna best" in reproduce and "--export" in reproduce and "flexcnn train trial-" in reproduce

    _check_sorting(browser, page.parent)
    _screenshot(browser, page.parent.parent.parent / "report.png")
    print(f"\nreport {page}: {page.stat().st_size:,} bytes, written in {demo['seconds']:.1f} s")


def test_pareto_front_in_a_browser(browser: Any, demo: dict[str, Any]) -> None:
    """A two-objective study (val/acc vs trainable parameters) from the demo's own trial folders."""
    tmp: Path = demo["tmp"]
    storage = f"sqlite:///{tmp / 'pareto.db'}"
    study = optuna.create_study(storage=storage, study_name="pareto", directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val/acc", "params/trainable"])
    for trial in demo["study"].trials:
        summary = json.loads(Path(trial.user_attrs["run_dir"], "summary.json").read_text())
        done = trial.state == TrialState.COMPLETE
        study.add_trial(
            create_trial(
                state=trial.state,
                values=[trial.value, summary["params/trainable"]] if done else None,
                params=trial.params,
                distributions=trial.distributions,
                intermediate_values=trial.intermediate_values,
                user_attrs=trial.user_attrs,
            )
        )
    proc = _flexcnn("report", "--storage", storage, "--study", "pareto", "--output", str(tmp / "pareto.html"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    urls, console = open_page(browser, (tmp / "pareto.html").as_uri())
    assert all(u.startswith(LOCAL_SCHEMES) for u in urls) and not [e for e in console if e["level"] == "SEVERE"]
    js = browser.execute_script
    front = sorted(t.number for t in study.best_trials)
    shown = js(
        "return Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
        ".filter(r => r.innerText.includes('(Pareto)')).map(r => Number(r.id.slice(6)))"
    )
    assert sorted(shown) == front
    points = js("var d = document.getElementById('fig-pareto'); return d.data.map(t => t.x ? t.x.length : 0)")
    assert sum(points) >= len(front), points


# --------------------------------------------------------------------------- helpers


def _check_learning_curves(js: Any, study: optuna.Study) -> None:
    """One curve per trial that trained; the pruned ones dashed and shorter than the 6 planned epochs."""
    traces = js(
        "return document.getElementById('fig-learning').data.filter(t => t.xaxis === 'x' || !t.xaxis)"
        ".map(t => [t.name, t.line.dash, t.x[t.x.length - 1]])"
    )
    assert len(traces) == len(study.trials)
    pruned = [t.number for t in study.trials if t.state == TrialState.PRUNED]
    cut = [t for t in traces if "pruned" in t[0]]
    assert len(cut) == len(pruned)
    assert all(dash == "dash" and last < 6 for _, dash, last in cut), cut


def _check_sorting(driver: Any, study_dir: Path) -> None:
    """Click the test/acc header: ascending, empty cells last; again: descending, matching summary.json."""
    from selenium.webdriver.common.by import By

    header = next(h for h in driver.find_elements(By.CSS_SELECTOR, "#leaderboard thead th") if h.text == "test/acc")
    column = driver.execute_script("return arguments[0].cellIndex", header)
    read = (
        "return Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
        ".map(r => [r.id, r.cells[arguments[0]].getAttribute('data-v')])"
    )
    for clicks, descending in ((1, False), (2, True)):
        header.click()
        rows = driver.execute_script(read, column)
        values = [float(v) for _, v in rows if v]
        assert values == sorted(values, reverse=descending) and values, rows
        assert all(not v for _, v in rows[len(values) :]), rows  # trials without a test/acc (pruned) last
        assert header.get_attribute("aria-sort") == ("descending" if descending else "ascending"), clicks
    # The top row is the trial whose run folder holds the highest test/acc.
    best = max(json.loads(p.read_text()).get("test/acc", -1) for p in study_dir.glob("trial-*/summary.json"))
    top = json.loads((study_dir / rows[0][0] / "summary.json").read_text())
    assert float(rows[0][1]) == top["test/acc"] == best


def _screenshot(driver: Any, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 16000))
    driver.execute_script("window.scrollTo(0, 0)")  # clicking a header scrolled the page
    time.sleep(0.5)
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 50_000
    copy = os.environ.get("FLEXCNN_REPORT_SCREENSHOT")
    if copy:
        shutil.copyfile(path, copy)
    driver.set_window_size(1400, 1000)


def _flexcnn(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexcnn", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
