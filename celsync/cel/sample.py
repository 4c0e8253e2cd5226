"""Build the bundled sample CEL database (``examples/sample-cel.sqlite``) from the corpus.

Every scenario's rows go into one ``stock`` table with their own ids, so the sample is the
interleaved stream a poller sees on a real PBX. Times are UTC (the example config says
``timezone: UTC``). Usage: ``python -m celsync.cel.sample OUT.sqlite [--corpus corpus.json]``.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

from celsync.cel.schema import CORPUS, create_table, insert_rows, load_corpus


def build_sample(out: str | Path, corpus: str | Path = CORPUS) -> int:
    """(Re)write ``out`` with every corpus row; return the number of rows."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        create_table(engine, "cel", "stock")
        count = insert_rows(engine, "cel", "stock", load_corpus(corpus), tz="UTC")
    finally:
        engine.dispose()
    con = sqlite3.connect(path)
    try:
        con.execute("VACUUM")  # smallest file to commit
    finally:
        con.close()
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="SQLite file to (re)create")
    parser.add_argument("--corpus", default=str(CORPUS), help="corpus.json to load")
    args = parser.parse_args(argv)
    count = build_sample(args.out, args.corpus)
    print(f"{args.out}: {count} CEL rows")


if __name__ == "__main__":
    main()
