"""What a reader did with every row and cell of a user's file: read, kept, rejected, and why.

A reader records each problem as an :class:`Issue`: a *rejected row* (its structure cannot be
used, its id repeats an earlier one, a label has no structure) never enters the table; a *bad
cell* (``'abc'`` in a numeric column, ``inf``, a unit that cannot be converted) becomes a
missing value of a row that is kept, and the column and every other row's value stay.
*Notes* are about whole columns or files (a text column that is not a property, a file read
in another encoding). Rows are numbered from 1, the first data row after the header.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from matloop.errors import ToolInputError


class Issue(BaseModel):
    """One rejected row, or one bad cell of a row that was kept."""

    order: int = Field(description="Position of the row in reading order (for sorting).")
    item_id: str = Field(description="Id of the row's item.")
    where: str = Field(description="The row as a user finds it: \"row 3 (id 'x')\" or a file name.")
    column: str | None = Field(default=None, description="Column of a bad cell, if the problem is one cell.")
    reason: str = Field(description="What is wrong.")
    rejected: bool = Field(description="True when the whole row was left out.")

    @property
    def message(self) -> str:
        return (
            f"{self.where}, {self.column}: {self.reason}" if self.column else f"{self.where}: {self.reason}"
        )


class Accounting(BaseModel):
    """Rows read and every problem met while reading one source."""

    read: int = Field(default=0, description="Rows (items) read from the input.")
    issues: list[Issue] = Field(default_factory=list, description="Rejected rows and bad cells, in order.")
    unused_columns: dict[str, str] = Field(
        default_factory=dict, description="Columns that are not properties, each with the reason."
    )
    notes: list[str] = Field(default_factory=list, description="Remarks on whole files (encoding, ids).")

    @classmethod
    def of(cls, meta: dict) -> Accounting | None:
        """The accounting stored in a source table's metadata (None for curated sources)."""
        return cls.model_validate(meta["accounting"]) if "accounting" in meta else None

    @property
    def rejected(self) -> list[Issue]:
        return [i for i in self.issues if i.rejected]

    @property
    def bad_cells(self) -> list[Issue]:
        return [i for i in self.issues if not i.rejected]

    @property
    def kept(self) -> int:
        return self.read - len(self.rejected)

    def reject(self, order: int, item_id: str, where: str, reason: str) -> None:
        self.issues.append(Issue(order=order, item_id=item_id, where=where, reason=reason, rejected=True))

    def bad_cell(self, order: int, item_id: str, where: str, reason: str, column: str | None = None) -> None:
        """A value of a kept row that is missing because of ``reason``."""
        self.issues.append(
            Issue(order=order, item_id=item_id, where=where, column=column, reason=reason, rejected=False)
        )

    def finish(self) -> Accounting:
        """Drop the bad cells of rejected rows and sort the issues in reading order."""
        gone = {(i.order, i.item_id) for i in self.rejected}
        kept = [i for i in self.issues if i.rejected or (i.order, i.item_id) not in gone]
        self.issues = sorted(kept, key=lambda i: (i.order, not i.rejected))
        return self

    def check_strict(self, name: str) -> None:
        """Raise on the first rejected row or bad cell (strict mode)."""
        if self.issues:
            more = f" (and {len(self.issues) - 1} more problems)" if len(self.issues) > 1 else ""
            raise ToolInputError(
                f"expected every row and cell of source {name!r} to be usable (strict mode), "
                f"got {self.issues[0].message}{more}"
            )

    def summary(self, max_items: int) -> list[str]:
        """The messages of the first ``max_items`` issues, then a count of the rest."""
        lines = [i.message for i in self.issues[:max_items]]
        if len(self.issues) > max_items:
            lines.append(f"... and {len(self.issues) - max_items} more")
        return lines
