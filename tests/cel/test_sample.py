"""The bundled sample database is the whole corpus, readable as configured in config.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celsync.cel.sample import build_sample, main
from tests.cel.helpers import actual, expected, open_source, read_all

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample-cel.sqlite"


def test_build_sample(
    tmp_path: Path, corpus_rows: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "sample.sqlite"
    main([str(out)])
    assert capsys.readouterr().out == f"{out}: {len(corpus_rows)} CEL rows\n"
    assert build_sample(out) == len(corpus_rows)  # rebuilding replaces the file
    with open_source(f"sqlite:///{out}", timezone="UTC") as src:
        rows = read_all(src, batch=5000)
    assert [actual(r) for r in rows] == [expected(r, "sqlite", "stock") for r in corpus_rows]


def test_committed_sample_is_current(corpus_rows: list[dict[str, Any]]) -> None:
    with open_source(f"sqlite:///{SAMPLE}", timezone="UTC") as src:
        assert not src.degraded and src.columns.summary() == "all canonical columns present"
        rows = read_all(src, batch=5000)
        assert [actual(r) for r in rows] == [expected(r, "sqlite", "stock") for r in corpus_rows]
