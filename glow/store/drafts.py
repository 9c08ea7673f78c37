"""Drafts in the store: tests being written, edited field by field, promoted exactly once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from glow.errors import NotFound, TransitionError
from glow.models import Draft, utcnow
from glow.store import tables as t
from glow.store.engine import StoreEngine
from glow.store.rows import as_row, insert_new


class Drafts(StoreEngine):
    """The store's drafts (part of `glow.store.Store`)."""

    def save_draft(self, draft: Draft) -> Draft:
        """Store a new draft, or replace a whole draft (one upsert, no check-then-write).

        To change some fields of a stored draft, `edit_draft` writes only those.
        """
        draft.updated_at = utcnow()
        row = as_row(draft, t.drafts)
        with self.engine.begin() as conn:
            inserted = conn.execute(insert_new(conn, t.drafts).values(row)).rowcount
            if not inserted:
                conn.execute(
                    update(t.drafts).where(t.drafts.c.draft_id == draft.draft_id).values(row)
                )
        return draft

    def edit_draft(self, draft_id: str, **fields: Any) -> Draft:
        """Change the given fields of a draft, and only those; return the draft as stored.

        The draft they make with the stored one is validated first; a draft promoted or
        deleted meanwhile is NotFound (nothing written).
        """
        current = self.get_draft(draft_id)
        now = utcnow()
        merged = Draft.model_validate({**current.model_dump(), **fields, "updated_at": now})
        values = {k: v for k, v in as_row(merged, t.drafts).items() if k in fields}
        values["updated_at"] = now
        values.pop("draft_id", None)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(t.drafts).where(t.drafts.c.draft_id == draft_id).values(values)
            ).rowcount
            row = conn.execute(select(t.drafts).where(t.drafts.c.draft_id == draft_id)).first()
        if not changed or row is None:
            raise NotFound(f"draft {draft_id!r} not found (promoted or deleted meanwhile)")
        return Draft.model_validate(row._mapping)

    def claim_draft(self, draft: Draft) -> None:
        """Take a draft out of the store to promote it, if it is still as read.

        One conditional DELETE: of several promotions at once exactly one gets the draft; the
        others get NotFound (it is gone) or a TransitionError (it was edited since `draft` was
        read: promote it again). `restore_draft` puts it back if the promotion fails.
        """
        dc = t.drafts.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                t.drafts.delete().where(
                    dc.draft_id == draft.draft_id, dc.updated_at == draft.updated_at
                )
            ).rowcount
            if taken:
                return
            exists = conn.execute(select(dc.draft_id).where(dc.draft_id == draft.draft_id)).first()
        if exists is None:
            raise NotFound(f"draft {draft.draft_id!r} not found (promoted or deleted meanwhile)")
        raise TransitionError(
            f"draft {draft.draft_id} was edited while it was being promoted; promote it again"
        )

    def restore_draft(self, draft: Draft) -> None:
        """Put back a draft taken by `claim_draft` whose promotion failed."""
        with self.engine.begin() as conn:
            conn.execute(insert_new(conn, t.drafts).values(as_row(draft, t.drafts)))

    def get_draft(self, draft_id: str) -> Draft:
        """The draft `draft_id`; NotFound if there is none."""
        with self._read() as conn:
            row = conn.execute(select(t.drafts).where(t.drafts.c.draft_id == draft_id)).first()
        if row is None:
            raise NotFound(f"draft {draft_id!r} not found")
        return Draft.model_validate(row._mapping)

    def list_drafts(self, test_id: str) -> list[Draft]:
        """A test's drafts, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(t.drafts)
                .where(t.drafts.c.test_id == test_id)
                .order_by(t.drafts.c.created_at)
            ).all()
        return [Draft.model_validate(r._mapping) for r in rows]

    def delete_draft(self, draft_id: str) -> None:
        """Delete a draft (nothing happens if there is none)."""
        with self.engine.begin() as conn:
            conn.execute(t.drafts.delete().where(t.drafts.c.draft_id == draft_id))
