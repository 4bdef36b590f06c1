"""Open every page of the built site in headless Chromium; fail on JavaScript errors and broken local images
or links, and list what each page fetches from outside the site.

    python docs/check_site.py docs/_build/html

Needs Playwright and its Chromium (``pip install playwright && playwright install chromium``).
"""

import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname


def check(site: Path) -> int:
    from playwright.sync_api import sync_playwright

    problems, external = [], set()
    pages = sorted(site.rglob("*.html"))
    with sync_playwright() as p:
        browser = p.chromium.launch()
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
        browser.close()
    print(f"{len(pages)} pages; fetched from outside the site: {sorted(external) or 'nothing'}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(check(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")))
