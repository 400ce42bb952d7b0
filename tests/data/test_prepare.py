"""Encoding a source into the cache: progress, bad-row reports per split."""

from __future__ import annotations

from featmux.data.prepare import prepare


def test_encoding_shows_progress(tmp_path, capsys):
    lines: list[str] = []
    prepare("synthetic", None, {"rows": 3000}, tmp_path, log=lines.append, progress=True)
    err = capsys.readouterr().err
    assert "encoding train" in err and "3.00k rows" in err
    assert any(line.startswith("encoding synthetic train split") for line in lines)
