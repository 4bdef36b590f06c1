"""Open every page of the built site in headless Chromium; fail on JavaScript errors, broken local images
or links, and math that MathJax did not typeset; list what each page fetches from outside the site.

    python docs/check_site.py docs/_build/html [--chromium /usr/bin/chromium]

Needs Playwright (``pip install playwright``) and a Chromium: Playwright's own (``playwright install
chromium``) or the system's, given with ``--chromium`` (e.g. Debian's ``apt install chromium``). Math is
typeset by MathJax, which the pages load from its CDN; on a machine without internet, build the site
with a local copy instead (see docs/README.md), or every page with math is reported.
"""

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

# Every formula Sphinx writes carries the class "math"; MathJax 3 replaces its text by an <mjx-container>.
COUNT_MATH = "() => document.querySelectorAll('.math').length"
WAIT_FOR_MATHJAX = ("async () => { if (!window.MathJax || !MathJax.startup) return -1;"
                    " await MathJax.startup.promise;"
                    " return document.querySelectorAll('mjx-container').length; }")


def check(site: Path, chromium: str | None = None) -> int:
    from playwright.sync_api import sync_playwright

    problems, external, math_pages = [], set(), 0
    pages = sorted(site.rglob("*.html"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page()
        current = {"name": ""}  # the page being checked, for the handlers below
        page.on("pageerror", lambda error: problems.append(f"{current['name']}: JavaScript error {error}"))
        page.on("request", lambda request: external.add(urlparse(request.url).netloc)
                if request.url.startswith("http") else None)
        for html in pages:
            name = current["name"] = html.relative_to(site).as_posix()
            page.goto(html.as_uri(), wait_until="load")
            for src in page.eval_on_selector_all("img", "els => els.filter(e => !e.complete || "
                                                  "e.naturalWidth === 0).map(e => e.src)"):
                problems.append(f"{name}: broken image {src}")
            for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                if href.startswith("file:"):
                    target = Path(url2pathname(urlparse(href).path))
                    if not target.exists():
                        problems.append(f"{name}: broken link {href}")
            formulas = page.evaluate(COUNT_MATH)
            if formulas:
                math_pages += 1
                typeset = page.evaluate(WAIT_FOR_MATHJAX)
                if typeset < formulas:
                    problems.append(f"{name}: {formulas} formulas, {max(typeset, 0)} typeset by MathJax"
                                    + (" (MathJax did not load)" if typeset < 0 else ""))
        browser.close()
    print(f"{len(pages)} pages, {math_pages} with math; fetched from outside the site: "
          f"{sorted(external) or 'nothing'}; problems: {len(problems)}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default="docs/_build/html", help="the built site")
    parser.add_argument("--chromium", help="a Chromium executable (default: Playwright's own)")
    args = parser.parse_args()
    sys.exit(check(Path(args.site), args.chromium))
