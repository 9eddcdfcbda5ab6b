"""The HTML report as a person sees it: opened from disk in real headless Chromium
(Debian's, driven by playwright), with every request and console error recorded, the
numbers read off the page and compared with counts taken from the Parquet files by
pyarrow alone, and one screenshot per section kept in tests/artifacts/report/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_helpers import (
    ARTIFACTS,
    SECTIONS,
    analyze_empty,
    analyze_samples,
    analyze_without_rsts,
    parquet_counts,
    write_million_connections,
)

from rstlens.reports import ReportOptions, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
MAX_HTML_BYTES = 5 * 1024 * 1024

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Opened:
    """A report open in a page, with what the page asked for and complained about."""

    def __init__(self, browser: Any, html: Path) -> None:
        self.url = html.resolve().as_uri()
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.goto(self.url)
        # the page sets data-charts-ready once every chart has been drawn (or has failed)
        self.page.wait_for_selector("body[data-charts-ready]", state="attached", timeout=60_000)

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith(("data:", "blob:"))]

    def table(self, selector: str) -> list[dict[str, str]]:
        """Rows of a table as {attribute or column: value}: every data-* of the row, and
        the data-value of each cell carrying data-col."""
        return self.page.eval_on_selector_all(
            f"{selector} tr[data-cause], {selector} tr[data-state], {selector} tr[data-key]",
            """rows => rows.map(r => {
                const out = Object.assign({}, r.dataset);
                r.querySelectorAll('[data-col]').forEach(c => out[c.dataset.col] = c.dataset.value);
                const v = r.querySelector('[data-value]'); if (v) out.value = v.dataset.value;
                return out; })""",
        )

    def screenshots(self, name: str) -> list[Path]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # the sticky navigation bar would cover the top of each section's picture
        self.page.add_style_tag(content="nav { position: static !important; }")
        shots = []
        for section in SECTIONS:
            path = ARTIFACTS / f"{name}-{section}.png"
            self.page.locator(f"section#{section}").screenshot(path=str(path))
            shots.append(path)
        return shots

    def close(self) -> None:
        self.page.close()


def _report(run: Path, out: Path, **options: Any) -> Path:
    result = write_report(run, out, ReportOptions(**options))
    assert result.path.stat().st_size < MAX_HTML_BYTES
    return result.path


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyze_samples(tmp_path_factory.mktemp("samples") / "out")


def test_sample_report_in_chromium(browser: Any, sample_run: Path, tmp_path: Path) -> None:
    html = _report(sample_run, tmp_path / "report.html")
    truth = parquet_counts(sample_run)
    opened = Opened(browser, html)
    try:
        assert opened.foreign_requests() == []
        assert opened.errors == []
        for section in SECTIONS:
            assert opened.page.locator(f"section#{section} h2").is_visible(), section
        # every chart drew an SVG
        charts = opened.page.eval_on_selector_all("[data-chart]", "els => els.map(e => !!e.querySelector('svg'))")
        assert charts and all(charts)

        page = opened.page
        assert int(page.get_attribute("#ov-rsts", "data-value")) == truth["rsts"]
        assert int(page.get_attribute("#ov-connections", "data-value")) == truth["connections"]
        assert int(page.get_attribute("#ov-reset-connections", "data-value")) == truth["reset_connections"]
        shown = {(r["cause"], r["subcause"]): int(r["rsts"]) for r in opened.table("#causes-table")}
        assert shown == dict(truth["by_cause_subcause"])
        states = {r["state"]: int(r["value"]) for r in opened.table("#conn-states-table")}
        assert states == dict(truth["conn_states"])
        key, count = truth["top_sender"]
        assert page.get_attribute("#top-sender", "data-key") == key
        assert int(page.get_attribute("#top-sender", "data-value")) == count
        senders = opened.table("#talkers-sender")
        assert senders[0]["key"] == key and int(senders[0]["value"]) == count
        # the middlebox section lists both kinds the samples contain
        verdicts = page.eval_on_selector_all("#middlebox-table tr[data-verdict]", "rs => rs.map(r => r.dataset.verdict)")
        assert {"middlebox.injected", "middlebox.reject"} <= set(verdicts)
        # explain ladders are embedded, with the packets re-read from the samples
        ladder = page.locator("details.ladder pre").first.inner_text()
        assert "packet ladder" in ladder and "verdict:" in ladder

        # the drill-down filters as one types, and sorts on a header click
        rows = page.locator("#drill tbody tr")
        total = rows.count()
        assert total == min(truth["rsts"], 300)
        page.fill("#drill-search", "middlebox.reject")
        visible = page.eval_on_selector_all("#drill tbody tr", "rs => rs.filter(r => r.style.display !== 'none').length")
        assert visible == truth["by_cause_subcause"][("middlebox", "reject")]
        page.fill("#drill-search", "")
        page.click("#drill th:nth-child(11)")  # unacked bytes, ascending
        page.click("#drill th:nth-child(11)")  # descending
        first = int(page.get_attribute("#drill tbody tr:first-child td:nth-child(11)", "data-value"))
        values = page.eval_on_selector_all("#drill tbody td:nth-child(11)", "cs => cs.map(c => +c.dataset.value)")
        assert first == max(values) and values == sorted(values, reverse=True)

        shots = opened.screenshots("samples")
        assert all(p.stat().st_size > 5_000 for p in shots)
    finally:
        opened.close()


def test_filtered_report_numbers(browser: Any, sample_run: Path, tmp_path: Path) -> None:
    """--cause keeps that cause's RSTs only, and the page's counts follow."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    html = _report(sample_run, tmp_path / "abort.html", cause="abort")
    resets = pq.read_table(sample_run / "resets.parquet")
    expected = pc.sum(pc.equal(resets["cause"].cast("string"), "abort")).as_py()
    opened = Opened(browser, html)
    try:
        assert opened.errors == [] and opened.foreign_requests() == []
        assert int(opened.page.get_attribute("#ov-rsts", "data-value")) == expected
        assert {r["cause"] for r in opened.table("#causes-table")} == {"abort"}
    finally:
        opened.close()


@pytest.mark.parametrize("kind", ["empty", "no_rsts"])
def test_reports_of_runs_without_resets_render(browser: Any, tmp_path: Path, kind: str) -> None:
    run = (analyze_empty if kind == "empty" else analyze_without_rsts)(tmp_path / "out")
    truth = parquet_counts(run)
    opened = Opened(browser, _report(run, tmp_path / "report.html"))
    try:
        assert opened.errors == [] and opened.foreign_requests() == []
        for section in SECTIONS:
            assert opened.page.locator(f"section#{section}").count() == 1
        assert int(opened.page.get_attribute("#ov-rsts", "data-value")) == 0
        assert int(opened.page.get_attribute("#ov-connections", "data-value")) == truth["connections"]
        assert opened.page.locator("#no-rsts").is_visible()
        assert "No TCP RST" in opened.page.inner_text("#headline")
        opened.screenshots(kind)
    finally:
        opened.close()


@pytest.mark.slow
def test_million_connection_report_renders(browser: Any, tmp_path: Path) -> None:
    run = write_million_connections(tmp_path / "big")
    truth = parquet_counts(run)
    html = _report(run, tmp_path / "big.html")
    opened = Opened(browser, html)
    try:
        assert opened.errors == [] and opened.foreign_requests() == []
        assert int(opened.page.get_attribute("#ov-connections", "data-value")) == 1_000_000
        shown = {(r["cause"], r["subcause"]): int(r["rsts"]) for r in opened.table("#causes-table")}
        assert shown == dict(truth["by_cause_subcause"])
        key, count = truth["top_sender"]
        assert opened.page.get_attribute("#top-sender", "data-key") == key
        assert int(opened.page.get_attribute("#top-sender", "data-value")) == count
        opened.screenshots("million")
    finally:
        opened.close()
