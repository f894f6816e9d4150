"""One language per page, in a real browser: every page of every demo role, opened in Chinese
(the default) and in English (the browser's ``Accept-Language``), shows no sentence of the
other language once its scripts have run.

What may legitimately be in another language is data (user, role and goods names, menu titles as
an admin typed them) and text an element marks with its own ``lang`` (the header's switch names
"English" in English; the API reference on ``/docs`` is marked ``lang="en"``). ``<code>``,
``<pre>`` and form values are left out: they are identifiers and what people typed. Set
``MSERVICES_TEST_SCREENSHOTS`` to keep a screenshot of each page in each language.
"""

from __future__ import annotations

import re

import pytest

from server.demo import DEMO_GOODS, DEMO_ROLES, DEMO_USERS
from tests.browser.conftest import browser_unavailable
from tests.browser.test_layout import (
    DESKTOP,
    ORDER,
    demo_order_id,
    every_role,
    keep_screenshot,
    new_context,
    passwords,
)
from tests.conftest import REQUIRE_SERVICES, Client

MISSING = browser_unavailable()
if MISSING is not None and not REQUIRE_SERVICES:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

from playwright.async_api import Browser, Page  # noqa: E402 - needs the check

__all__ = ["passwords"]  # the fixture, imported for these tests

PAGE_TEXT = """() => {
  const page = document.documentElement.lang || "";
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!element || element.closest("script, style, code, pre, textarea, [hidden]")) continue;
    const marked = element.closest("[lang]");
    if (marked && marked.lang !== page) continue;
    if (!element.getClientRects().length) continue;
    texts.push(node.textContent);
  }
  for (const field of document.querySelectorAll("[placeholder], [title], [aria-label], img[alt]")) {
    const marked = field.closest("[lang]");
    if (marked && marked.lang !== page) continue;
    for (const name of ["placeholder", "title", "aria-label", "alt"]) {
      if (field.getAttribute(name)) texts.push(field.getAttribute(name));
    }
  }
  for (const button of document.querySelectorAll("input[type=submit], input[type=button]")) {
    texts.push(button.value);
  }
  return {lang: page, title: document.title, text: texts.join("\\n")};
}"""
"""The page's language and every text a person reads in it, minus what is marked as another
language or is code or a typed value."""

CHINESE = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+")
ENGLISH_SENTENCE = re.compile(r"\b[A-Za-z][a-z]+(?:[ ,'’-]+[A-Za-z][a-z]+){2,}")
"""Three English words in a row: a sentence (or the part of one) a Chinese page must not show."""
ALLOWED_ENGLISH = ("mservices",)
DATA = sorted(
    {
        *(title for title, _author, _price in DEMO_GOODS),
        *(author for _title, author, _price in DEMO_GOODS),
        *(name for name, _role, _superuser in DEMO_USERS),
        *DEMO_ROLES,
    },
    key=len,
    reverse=True,
)
"""Demo data that is shown as stored whatever the language (longest first, so a name inside a
longer one is removed with it)."""


def without_data(text: str) -> str:
    """``text`` without the demo's data values."""
    for value in DATA:
        text = text.replace(value, " ")
    return text


def other_language(language: str, text: str) -> list[str]:
    """The pieces of ``text`` that belong to the other language."""
    text = without_data(text)
    if language == "en-US":
        return CHINESE.findall(text)
    for allowed in ALLOWED_ENGLISH:
        text = text.replace(allowed, " ")
    return ENGLISH_SENTENCE.findall(text)


async def sweep(page: Page, who: str, paths: tuple[str, ...], language: str) -> list[str]:
    """Open each path and report what is in the wrong language."""
    order = await demo_order_id(page) if any(ORDER in path for path in paths) else ""
    problems: list[str] = []
    for path in paths:
        url = path.replace(ORDER, order)
        response = await page.goto(url)
        assert response is not None, url
        await page.wait_for_load_state("load")
        # Scripts write their status lines after load (the chat connects, downloads poll).
        await page.wait_for_timeout(300)
        seen = await page.evaluate(PAGE_TEXT)
        if seen["lang"] != language:
            problems.append(f"{who} {url}: <html lang={seen['lang']!r}>, expected {language}")
        wrong = other_language(language, seen["title"] + "\n" + seen["text"])
        if wrong:
            problems.append(f"{who} {url} ({language}): {wrong[:8]}")
        slug = re.sub(r"[^a-z0-9]+", "-", url.lower()).strip("-") or "home"
        await keep_screenshot(page, f"language-{language}-{who}-{slug}")
    return problems


@pytest.mark.parametrize("language", ["zh-CN", "en-US"])
async def test_every_page_speaks_one_language(
    browser: Browser, client: Client, passwords: dict[str, str], language: str
) -> None:
    problems = []
    for who, page, paths in await every_role(browser, client, passwords, DESKTOP, language):
        problems += await sweep(page, who, paths, language)

    assert not problems, "\n".join(problems)


async def test_the_header_switch_changes_the_language_and_keeps_the_page(
    browser: Browser, client: Client, passwords: dict[str, str]
) -> None:
    page = await (await new_context(browser, client, DESKTOP)).new_page()
    await page.goto("/login")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"

    await page.get_by_role("button", name="English").click()
    await page.wait_for_url("**/login")
    assert await page.evaluate("document.documentElement.lang") == "en-US"
    await page.get_by_role("heading", name="Log in").wait_for()

    await page.get_by_role("button", name="中文").click()
    await page.wait_for_url("**/login")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
