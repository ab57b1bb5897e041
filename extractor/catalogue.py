"""The black box's whole catalogue, whatever its listing's paging.

recmimic's contract lists ids at `GET /v1/items`, paged by `offset` and `limit` with a
`next_offset`; an API profile (`extractor.profiles.CatalogueSpec`) names another path, where a
page holds its ids, and its paging: offsets (with or without a next offset or a total),
cursors or next links. Every style reads to the end, and a listing that ends before its own
`total` is an error, not a silent cut: a listing paged by offset and limit with a total and no
`next_offset` was once cut to its first page (1,000 of 1,682 items), and data-free start items
came only from those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jmespath

from extractor.client import BlackBoxClient
from extractor.errors import BlackBoxError
from extractor.profiles import CatalogueSpec
from extractor.wire import as_ids

ITEMS_PATH = "/v1/items"
RECMIMIC_LISTING = CatalogueSpec(path=ITEMS_PATH)
MAX_PAGES = 100_000  # a listing that never ends is an error, not a hang


async def catalogue(client: BlackBoxClient) -> list[str] | None:
    """Every item id the black box lists, in its order; None when it offers no listing."""
    profile = client.config.profile
    spec = RECMIMIC_LISTING if profile is None else profile.catalogue
    if spec.file is not None:
        return read_catalogue_file(spec.file)
    if spec.path is None:
        return None
    pages = _Pages(client, spec)
    items: list[str] = []
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        page = await pages.next_page()
        if page is None and pages.first:
            return None
        if page is None:
            raise BlackBoxError(f"GET {spec.path}: a page after the first is not there (404)")
        ids, total = pages.read(page)
        new = [item for item in ids if item not in seen]
        items += new
        seen.update(new)
        if pages.done(page, ids, new, total, len(items)):
            if total is not None and len(items) < total:
                raise BlackBoxError(
                    f"GET {spec.path}: the listing ended at {len(items)} of its {total} items"
                )
            return items
    raise BlackBoxError(f"GET {spec.path}: the listing did not end after {MAX_PAGES} pages")


def read_catalogue_file(path: Path) -> list[str]:
    """The ids of a catalogue file, one per line (blank lines skipped), each once in order."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read the catalogue file {path}: {why}") from None
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


class _Pages:
    """Where the next page is, for one listing's paging style."""

    def __init__(self, client: BlackBoxClient, spec: CatalogueSpec) -> None:
        self.client, self.spec = client, spec
        self.items_at = jmespath.compile(spec.items)
        self.next_at = jmespath.compile(spec.next_at)
        self.total_at = None if spec.total is None else jmespath.compile(spec.total)
        self.offset = 0
        self.cursor: str | None = None
        self.link: str | None = None
        self.first = True

    async def next_page(self) -> Any | None:
        """The next page's JSON; None when the path is not there (404, 405)."""
        spec, limit = self.spec, self.client.config.items_page_size
        path: str = spec.path or ITEMS_PATH
        params: dict[str, Any] | None = None
        if spec.paging == "offset":
            params = {spec.offset_param: self.offset, spec.limit_param: limit}
        elif spec.paging == "cursor":
            params = {spec.limit_param: limit}
            if self.cursor is not None:
                params[spec.cursor_param] = self.cursor
        elif self.link is not None:
            path = self.link
        page = await self.client.get_json(path, params)
        if page is not None and not isinstance(page, (dict, list)):
            raise BlackBoxError(f"GET {spec.path}: a page is not a JSON object or list")
        return page

    def read(self, page: dict[str, Any] | list[Any]) -> tuple[list[str], int | None]:
        listed = self.items_at.search(page)
        ids = as_ids(listed) if isinstance(listed, list) else None
        total = None if self.total_at is None else self.total_at.search(page)
        if ids is None or not (total is None or _is_count(total)):
            raise BlackBoxError(f"GET {self.spec.path}: malformed page ({self.spec.items!r})")
        return ids, total

    def done(
        self,
        page: dict[str, Any] | list[Any],
        ids: list[str],
        new: list[str],
        total: int | None,
        have: int,
    ) -> bool:
        """Whether `page` was the last; else where the next one is."""
        self.first = False
        following = self.next_at.search(page)
        if self.spec.paging == "cursor":
            self.cursor = str(following) if following not in (None, "") else None
            return self.cursor is None
        if self.spec.paging == "next-link":
            self.link = None if not following else self._same_host(str(following))
            return self.link is None
        said = self.spec.next_at in page or self.spec.next is not None
        if said and following is not None:
            if not _is_count(following) or following <= self.offset:
                raise BlackBoxError(f"GET {self.spec.path}: next offset {following!r} is not ahead")
            self.offset = following
            return False
        if said:  # null: the last page
            return True
        more = have < total if total is not None else bool(new)
        self.offset += len(ids)
        return not (more and ids)

    def _same_host(self, link: str) -> str:
        """A next link as a path and query on the black box's own origin."""
        parts = urlsplit(link)
        base = urlsplit(self.client.config.base_url)
        if parts.netloc and parts.netloc != base.netloc:
            raise BlackBoxError(f"GET {self.spec.path}: a next link leaves the black box's host")
        path = parts.path
        if base.path.rstrip("/") and path.startswith(base.path.rstrip("/")):
            path = path[len(base.path.rstrip("/")) :]  # the client adds its base path itself
        return path + (f"?{parts.query}" if parts.query else "")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
