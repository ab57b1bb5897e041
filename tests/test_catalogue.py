"""The whole catalogue whatever the listing's paging (extractor.catalogue), from real servers.

Each stub lists 250 ids, at most 100 a page whatever the client asks, in one of the shapes
APIs use; recmimic's own contract is covered in test_extractor_client.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI

from extractor.catalogue import catalogue
from extractor.client import BlackBoxClient, ClientConfig
from extractor.errors import BlackBoxError
from extractor.profiles import ApiProfile
from teacher_mock.server import running

LISTED = [f"item-{i}" for i in range(250)]
PAGE = 100


def listing(style: str) -> FastAPI:
    """A stub listing at /catalog in `style`."""
    app = FastAPI()

    @app.get("/catalog")
    async def catalog(
        offset: int = 0, limit: int = PAGE, cursor: str | None = None, page: int = 0
    ) -> dict[str, Any]:
        size = min(limit, PAGE)
        if style == "cursor":
            start = int(cursor or 0)
            rest = start + size < len(LISTED)
            return {
                "data": LISTED[start : start + size],
                "cursor": str(start + size) if rest else None,
            }
        if style == "next-link":
            start = page * PAGE
            link = f"/catalog?page={page + 1}" if start + PAGE < len(LISTED) else None
            return {"data": LISTED[start : start + PAGE], "links": {"next": link}}
        start = 0 if style == "offset ignored" else offset
        body: dict[str, Any] = {"data": LISTED[start : start + size]}
        if style in ("total", "cut short"):
            body["count"] = len(LISTED) + (10 if style == "cut short" else 0)
        return body

    return app


def profile(**catalogue: Any) -> ApiProfile:
    return ApiProfile.model_validate(
        {
            "name": "stub",
            "request": {"path": "/recs", "body": {"h": "{history}"}},
            "answer": {"items": "items"},
            "catalogue": {"path": "/catalog", "items": "data", "total": "count", **catalogue},
        }
    )


def listed_by(style: str, spec: ApiProfile) -> list[str] | None:
    async def run(url: str) -> list[str] | None:
        config = ClientConfig(base_url=url, api_key="k", items_page_size=1000, profile=spec)
        async with BlackBoxClient(config) as client:
            return await catalogue(client)

    with running(listing(style)) as url:
        return asyncio.run(run(url))


@pytest.mark.parametrize(
    ("style", "spec", "expected"),
    [
        ("total", profile(), LISTED),  # offset and limit with a total, no next offset
        ("no total", profile(), LISTED),  # until a page brings nothing new
        ("offset ignored", profile(), LISTED[:PAGE]),  # the same page again: the end
        ("cursor", profile(paging="cursor", next="cursor"), LISTED),
        ("next-link", profile(paging="next-link", next="links.next"), LISTED),
    ],
)
def test_every_paging_style_reaches_the_whole_catalogue(
    style: str, spec: ApiProfile, expected: list[str]
) -> None:
    assert listed_by(style, spec) == expected


def test_a_listing_that_ends_before_its_own_total_is_an_error() -> None:
    with pytest.raises(BlackBoxError, match="ended at 250 of its 260 items"):
        listed_by("cut short", profile())


def test_a_next_link_to_another_host_is_refused() -> None:
    app = FastAPI()

    @app.get("/catalog")
    async def catalog() -> dict[str, Any]:
        return {"data": ["a"], "links": {"next": "http://elsewhere.example/catalog?page=2"}}

    async def run(url: str) -> list[str] | None:
        spec = profile(paging="next-link", next="links.next")
        async with BlackBoxClient(ClientConfig(base_url=url, api_key="k", profile=spec)) as c:
            return await catalogue(c)

    with running(app) as url, pytest.raises(BlackBoxError, match="leaves the black box's host"):
        asyncio.run(run(url))
