"""The comparison report as a reader sees it: report.html opened in Debian Chromium at 1,400 px through Playwright.

Checks what issue 19 found wrong with it: the page opens with what ran, on which task, and a verdict, before any
table; the summary table fits the page (no sideways scroll) with labelled columns and their meanings; each run's
settings are a table, not raw JSON; every figure drew. Saves `report-1400.png` (the whole page) in
$FLOWRL_NB_TEST_OUTPUT, else pytest's tmp_path. Skips only when Chromium is missing.
"""
import os, sys
from pathlib import Path
import pytest
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.experiments import COLUMNS, TABLE_COLUMNS, compare
from small_compare import SMALL  # tests/small_compare.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from docs_browser import CHROMIUM_ARGS, chromium  # noqa: E402

CHROMIUM = chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='Chromium is not installed (apt-get install -y chromium)')


def test_report_reads_top_down_at_1400px(tmp_path):
    from playwright.sync_api import sync_playwright
    import torch
    torch.set_num_threads(1)
    out = Path(os.environ.get('FLOWRL_NB_TEST_OUTPUT', tmp_path)); out.mkdir(parents=True, exist_ok=True)
    compare(FlowRLConfig(**SMALL), steps=4, out_dir=tmp_path / 'cmp', workers=1)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
            page.on('pageerror', lambda e: errors.append(str(e)))
            page.goto((tmp_path / 'cmp' / 'report.html').as_uri())
            page.wait_for_function('() => document.querySelectorAll(".plotly-graph-div .main-svg").length >= 3')
            page.screenshot(path=str(out / 'report-1400.png'), full_page=True)
            # the reader's order: what ran and the task, then the verdict, all on the first screen
            heads = page.eval_on_selector_all('h2', 'hs => hs.map(h => h.textContent)')
            assert heads[:3] == ['Verdict', 'Summary', 'Settings'], heads
            intro = page.inner_text('body > p')
            assert '4 runs (flowrl, grpo, reinforce_pp, ppo), 4 steps each' in intro and 'Digit sum: each prompt' in intro, intro
            verdict_box = page.locator('ul.verdict').bounding_box()
            assert verdict_box['y'] + 40 < 900, verdict_box   # its first sentence is on the first screen
            assert page.locator('ul.verdict li').first.inner_text().startswith('Closest to the target: ')
            # the table fits: no sideways scroll, labelled columns, each header's meaning as a tooltip and in the glossary
            assert page.evaluate('document.documentElement.scrollWidth') <= 1400
            table = page.locator('div.table table').first
            assert table.bounding_box()['width'] <= 1400 - 2 * 20
            headers = table.locator('th').all_inner_texts()
            assert [h.replace('\n', ' ') for h in headers][-len(TABLE_COLUMNS):] == [COLUMNS[c][0] for c in TABLE_COLUMNS]
            assert table.locator('th').nth(2).get_attribute('title') == COLUMNS[TABLE_COLUMNS[0]][2]
            assert page.locator('dl.glossary dt').all_inner_texts() == [COLUMNS[c][0] for c in TABLE_COLUMNS]
            rows = table.locator('tr').all_inner_texts()
            assert rows[1].startswith('target p*_∞') and rows[2].startswith('start (reference)'), rows
            # settings as a table of readable values, never the overrides' raw JSON
            settings = page.locator('div.table table').nth(1).inner_text()
            assert 'beta=15' in settings and 'kl_coef=0' in settings and '{"' not in page.inner_text('body')
            assert 'the lines only join those measurements' in page.inner_text('body')
        finally:
            browser.close()
    assert not errors, errors
