"""The built handout, read as a person would: headless Chromium, math and tables rendered, every image loaded and
described, figures legible, code, equations and tables as wide as the column at most (on a laptop screen too), no raw
TeX in links, no warnings, an exercise with a solution for each question of the problem set, nothing remote. Prints
each chapter's reading time.

Needs `make book` first and Debian's chromium and chromium-driver; skipped without them, except in CI (CI=true),
where .ci/run provides both and a missing one is a failure. Keeps a screenshot of the continuous-time chapter in
_build/screenshots/ for review.
"""

import functools
import http.server
import math
import os
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "book"))
from handout import COLUMN_PX, MIN_TEXT_PX  # noqa: E402  (the book's helper module: what its figures assume)

BUILD = REPO_ROOT / "_build" / "html"
SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"
DESKTOP_PX = 1400  # the window the tests read pages in, in CSS pixels
LAPTOP_PX = 1280  # the narrowest common laptop screen
CHAPTERS = ["intro", "forward_process", "reverse_process", "timesteps", "respacing", "continuous_time", "ground_truth",
            "references"]
RAW_TEX = re.compile(r"\\(frac|beta|alpha|mathcal|mathrm|sqrt|sum|int|nabla)\b|\$\$|\\\(|\\\[")
RAW_TABLE = re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE)  # a Markdown table row shown as text, not a table
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PROBLEMS = ["1a", "1b", "1c", "1d", "2a", "2b", "3a", "3b", "3c"]  # the problem set's questions: exercise ex-<name>
WORDS_PER_MINUTE = 200  # a student reading prose with formulas

missing = [what for what, ok in (("the built book (make book)", (BUILD / "index.html").exists()),
                                 ("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)) if not ok]
if missing and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI must provide {', '.join(missing)}: see .ci/run")
pytestmark = pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def site():
    """The built book served on a loopback port, as a reader's browser would load it."""
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(BUILD))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={DESKTOP_PX},1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(180)
    yield driver
    driver.quit()


def open_page(browser, site, chapter):
    """Load a chapter and wait until MathJax, where the page loads it, has typeset it."""
    browser.get(f"{site}/{chapter}.html")
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        if (!document.querySelector('script[src*="mathjax"]')) { done(false); return; }
        const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(() => done(true)) : setTimeout(wait, 100);
        wait();""")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_math_renders_images_load_and_nothing_is_remote(browser, site, chapter):
    open_page(browser, site, chapter)
    prose = browser.execute_script("""
        const copy = document.querySelector('main').cloneNode(true);
        copy.querySelectorAll('pre, code, .highlight, mjx-container, script').forEach(e => e.remove());
        return copy.innerText;""")
    leftover = RAW_TEX.findall(prose)
    assert not leftover, f"{chapter}: raw TeX left on the page: {leftover[:5]}"
    rows = RAW_TABLE.findall(prose)
    assert not rows, f"{chapter}: Markdown tables left as text: {rows[:3]}"
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);")
    assert not broken, f"{chapter}: images that did not load: {broken}"
    links = browser.execute_script("""
        return Array.from(document.querySelectorAll('main a')).map(a => a.innerText).filter(t => /[\\\\$]/.test(t));""")
    assert not links, f"{chapter}: raw TeX in link text: {links[:5]}"
    stderr = browser.execute_script("""
        return Array.from(document.querySelectorAll('main .stderr, main .output.traceback')).map(e => e.innerText);""")
    assert not stderr, f"{chapter}: warnings or stderr printed into the page: {stderr[:3]}"
    wide = browser.execute_script("""
        return Array.from(document.querySelectorAll('main pre')).filter(p => p.scrollWidth > p.clientWidth + 1)
            .map(p => p.innerText.split('\\n').reduce((a, b) => b.length > a.length ? b : a));""")
    assert not wide, f"{chapter}: code wider than the column, read only by scrolling sideways: {wide[:3]}"
    alts = browser.execute_script("return Array.from(document.querySelectorAll('main img')).map(i => i.alt);")
    hashes = [alt for alt in alts if len(alt.split()) < 3]
    assert not hashes, f"{chapter}: images without a meaningful alt text: {hashes[:3]}"
    remote = browser.execute_script("""
        return Array.from(document.querySelectorAll('script[src], link[href], img[src]'))
            .map(e => e.src || e.href).filter(u => !u.startsWith(location.origin));""")
    assert not remote, f"{chapter}: fetched from outside the site: {remote}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_code_equations_and_tables_fit_a_laptop_screen(browser, site, chapter):
    """At LAPTOP_PX the text column is narrowest before the sidebars fold away: nothing may need a sideways scroll."""
    browser.set_window_size(LAPTOP_PX, 1000)
    try:
        open_page(browser, site, chapter)
        wide = browser.execute_script("""
            const column = document.querySelector('main article').getBoundingClientRect().right + 1;
            const beyond = e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > column;
            const first = e => e.textContent.trim().split('\\n')[0].slice(0, 60);
            return Array.from(document.querySelectorAll(
                'main pre, main mjx-container[display="true"], main table')).filter(beyond).map(first);""")
    finally:
        browser.set_window_size(DESKTOP_PX, 1000)
    assert not wide, f"{chapter}: wider than the column at {LAPTOP_PX} px, read only by scrolling sideways: {wide[:3]}"


def test_figures_fill_the_column_their_text_assumes(browser, site):
    """handout.save_figure sizes figure text for a COLUMN_PX column; a wide figure must be shown that wide."""
    open_page(browser, site, "continuous_time")
    shown = browser.execute_script("""
        return Array.from(document.querySelectorAll('main img')).map(i => [i.clientWidth, i.naturalWidth]);""")
    wide = [(width, natural) for width, natural in shown if natural > COLUMN_PX]
    assert wide, "the continuous-time chapter should hold a figure wider than the column"
    assert all(width >= COLUMN_PX - 2 for width, _ in wide), \
        f"figures shown narrower than {COLUMN_PX} px, so their text falls below {MIN_TEXT_PX} px: {wide}"


def test_every_problem_has_an_exercise_with_a_solution(browser, site):
    found = {}
    for chapter in CHAPTERS:
        open_page(browser, site, chapter)
        found.update(browser.execute_script("""
            const found = {};
            document.querySelectorAll('main .exercise[id]').forEach(e => found[e.id] = false);
            document.querySelectorAll('main .solution').forEach(s => {
                const link = s.querySelector('a[href*="#ex-"]');
                if (link) found[link.getAttribute('href').split('#')[1]] = true;
            });
            return found;"""))
    missing = [problem for problem in PROBLEMS if f"ex-{problem}" not in found]
    assert not missing, f"no exercise for problems {missing}"
    unsolved = [problem for problem in PROBLEMS if not found[f"ex-{problem}"]]
    assert not unsolved, f"no solution for problems {unsolved}"


def test_each_citation_reads_as_its_reference_is_labelled(browser, site):
    """A citation "Song, Meng, and Ermon [2021]" leads to the reference labelled so, not to an alpha code ("SME21")
    or to another Song et al. of 2021."""
    open_page(browser, site, "references")
    labels = browser.execute_script("""
        const labels = {};
        document.querySelectorAll('main .citation[id]').forEach(
            c => labels[c.id] = c.querySelector('.label').innerText);
        return labels;""")
    plain = lambda text: " ".join(re.sub(r"[\[\],]", " ", text).split())
    cited = set()
    for chapter in CHAPTERS[:-1]:
        open_page(browser, site, chapter)
        citations = browser.execute_script("""
            return Array.from(document.querySelectorAll('main .bibtex-citation')).map(c => {
                const links = Array.from(c.querySelectorAll('a')).map(a => [a.hash.slice(1), a.innerText]);
                return [c.innerText, links];
            });""")
        for text, links in citations:
            # one reference: the whole citation ("Ho et al. [2020]"); several: each link names its own
            for target, shown in links if len(links) > 1 else [(links[0][0], text)]:
                assert plain(shown) == plain(labels[target]), f"{chapter}: {text!r} leads to [{labels[target]}]"
                cited.add(target)
    assert cited == labels.keys(), f"references never cited: {sorted(labels[key] for key in labels.keys() - cited)}"


def test_reading_time(browser, site, capsys):
    """Prints each chapter's prose reading time (code, math and tables excluded); the handout is an evening's read."""
    minutes = {}
    for chapter in CHAPTERS:
        open_page(browser, site, chapter)
        words = browser.execute_script("""
            const copy = document.querySelector('main').cloneNode(true);
            copy.querySelectorAll('pre, .highlight, mjx-container, table, script, .cell_output').forEach(e => e.remove());
            return copy.innerText.split(/\\s+/).filter(w => /[A-Za-z]/.test(w)).length;""")
        minutes[chapter] = math.ceil(words / WORDS_PER_MINUTE)
    with capsys.disabled():
        print("\nreading time (minutes): " + ", ".join(f"{chapter} {m}" for chapter, m in minutes.items())
              + f"; total {sum(minutes.values())}")
    assert sum(minutes.values()) <= 60, f"the handout should read in an evening: {minutes}"


def test_continuous_time_chapter_has_typeset_math_and_figure(browser, site):
    open_page(browser, site, "continuous_time")
    assert browser.execute_script("return document.querySelectorAll('mjx-container').length") > 10
    assert browser.execute_script("return document.querySelectorAll('main img').length") >= 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(DESKTOP_PX, min(height, 12000))
    assert browser.save_screenshot(str(SCREENSHOTS / "continuous_time.png"))
