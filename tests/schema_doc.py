"""The generated parts of docs/schema.md: the columns and indexes of `inference_runs` and
`attempts`, and the list of migrations, as the code creates them.

The schema is the one `serve` makes: the code's own migrations (`proxy.store.migrations.migrate`)
run on an empty SQLite database, then read back with SQLite's pragmas. Between the markers
`<!-- schema:NAME -->` and `<!-- /schema:NAME -->` the page holds a table whose first
column (the column name, or the migration's version) and type come from the code; only
the last column, what it means, is written by hand, and is kept from the page as it is.
A column or migration the page does not describe yet gets `(not described yet)`.

    .venv/bin/python tests/schema_doc.py          # say whether docs/schema.md is up to date
    .venv/bin/python tests/schema_doc.py --write  # rewrite its generated parts

tests/test_docs_schema.py runs the same comparison.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "schema.md"
TABLES = ("inference_runs", "attempts")
UNDESCRIBED = "(not described yet)"
REGENERATE = ".venv/bin/python tests/schema_doc.py --write"
BLOCK = re.compile(r"(<!-- schema:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(\n<!-- /schema:(?P=name) -->)", re.S)


def migrated_database(path: Path) -> sqlite3.Connection:
    """An empty SQLite log at `path`, migrated by the code's own migrations."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine

    from proxy.store.migrations import migrate

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        migrate(conn)
    engine.dispose()
    return sqlite3.connect(path)


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row (`\\|` inside a cell is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _meanings(body: str) -> dict[str, str]:
    """What the page says of each row, keyed by the row's first cell without its backticks."""
    meanings = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = _cells(line)
            meanings[cells[0].strip("`")] = cells[-1]
    return meanings


def _column_block(db: sqlite3.Connection, table: str, meanings: dict[str, str]) -> str:
    unique = set()
    for _, name, is_unique, *_ in db.execute(f"PRAGMA index_list({table})"):
        columns = [row[2] for row in db.execute(f"PRAGMA index_info({name})")]
        if is_unique and len(columns) == 1:
            unique.add(columns[0])
    lines = ["| Column | Type | Meaning |", "|---|---|---|"]
    for _, name, kind, notnull, _default, pk in db.execute(f"PRAGMA table_info({table})"):
        kind = kind + (" PRIMARY KEY" if pk else "") + (" NOT NULL" if notnull and not pk else "")
        kind += " UNIQUE" if name in unique else ""
        lines.append(f"| `{name}` | {kind} | {meanings.get(name) or UNDESCRIBED} |")
    indexes = [
        " ".join(sql.split()) + ";"
        for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
            (table,),
        )
    ]
    lines += ["", "Indexes (besides the primary key" + (" and the unique column" if unique else "") + "):", "", "```sql", *indexes, "```"]
    return "\n".join(lines)


def _migration_block(meanings: dict[str, str]) -> str:
    from proxy.store.migrations import MIGRATIONS

    lines = ["| Version | Name | What it does |", "|---|---|---|"]
    for version, name, _step in MIGRATIONS:
        lines.append(f"| `{version}` | `{name}` | {meanings.get(str(version)) or UNDESCRIBED} |")
    return "\n".join(lines)


def generate(page: str) -> str:
    """`page` with its generated parts made anew from the code's schema."""
    with tempfile.TemporaryDirectory() as tmp:
        db = migrated_database(Path(tmp) / "log.db")
        try:
            def block(match: re.Match[str]) -> str:
                name, body = match["name"], match["body"]
                meanings = _meanings(body)
                if name in TABLES:
                    text = _column_block(db, name, meanings)
                elif name == "migrations":
                    text = _migration_block(meanings)
                else:
                    raise ValueError(f"docs/schema.md: unknown generated part {name!r}")
                return match.group(1) + text + match.group(4)

            found = {m["name"] for m in BLOCK.finditer(page)}
            missing = {*TABLES, "migrations"} - found
            if missing:
                raise ValueError(f"docs/schema.md lacks the markers <!-- schema:NAME --> for {sorted(missing)}")
            return BLOCK.sub(block, page)
        finally:
            db.close()


def main(argv: list[str]) -> int:
    current = PAGE.read_text(encoding="utf-8")
    fresh = generate(current)
    if "--write" in argv:
        PAGE.write_text(fresh, encoding="utf-8")
        print(f"wrote {PAGE.relative_to(ROOT)}" + (f"; describe the rows marked {UNDESCRIBED}" if UNDESCRIBED in fresh else ""))
        return 0
    if fresh != current:
        print(f"{PAGE.relative_to(ROOT)} is out of date: run {REGENERATE}")
        return 1
    print(f"{PAGE.relative_to(ROOT)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
