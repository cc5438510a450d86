"""The site tree as fleet-wide views filter it: a site and everything below it.

The tree is small (hundreds of nodes in a county, tens of thousands in a province), so it is
read whole and walked here, one code path for SQLite and PostgreSQL (as in
:mod:`~controller.services.health`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Site
from controller.domain.errors import NotFound


async def subtree(session: AsyncSession, site_id: int) -> set[int]:
    """Return ``site_id`` and the ids of every site below it. Raises :class:`NotFound`."""
    rows = (await session.execute(select(Site.id, Site.parent_id))).all()
    parents: dict[int, int | None] = {site: parent for site, parent in rows}
    if site_id not in parents:
        raise NotFound(f"no site {site_id}")
    children: dict[int, list[int]] = {}
    for site, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(site)
    found, todo = set(), [site_id]
    while todo:
        site = todo.pop()
        if site not in found:
            found.add(site)
            todo.extend(children.get(site, []))
    return found
