"""actparse.schemas: artifact schemas, validated reads, atomic Parquet writes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actparse.schemas import (ParquetStreamWriter, SchemaError, from_rows, iter_row_groups, read_table,
                              write_table)


def _person_row(**over):
    row = {"video": "v", "frame": 0, "person": 0, "box": [0, 0, 10, 10], "score": 0.9}
    row.update(over)
    return row


def test_schema_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "p.parquet"
    write_table(from_rows([_person_row(), _person_row(person=1, score=0.5)], "persons"), path, "persons")
    t = read_table(path, "persons")
    assert t.num_rows == 2 and t.column("score").to_pylist() == pytest.approx([0.9, 0.5])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_schema_rejects_wrong_shape_missing_and_extra(tmp_path):
    with pytest.raises(SchemaError, match="box"):
        from_rows([_person_row(box=[0, 0, 10])], "persons")
    with pytest.raises(SchemaError, match="missing column"):
        from_rows([{k: v for k, v in _person_row().items() if k != "score"}], "persons")
    with pytest.raises(SchemaError, match="unexpected"):
        from_rows([_person_row(extra=1)], "persons")
    # A file written by someone else with a wrong column type is rejected on read, naming the file.
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"video": ["v"], "frame": [0], "person": [0], "box": [[0.0, 0, 1, 1]],
                             "score": ["high"]}), bad)
    with pytest.raises(SchemaError, match="bad.parquet.*score"):
        read_table(bad, "persons")


def test_stream_writer_keeps_old_artifact_on_failure(tmp_path):
    path = tmp_path / "p.parquet"
    write_table(from_rows([_person_row()], "persons"), path, "persons")
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ParquetStreamWriter(path, "persons") as w:
            w.write(from_rows([_person_row(video="a")], "persons"))
            raise RuntimeError("crash mid-stage")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]
    with ParquetStreamWriter(path, "persons") as w:
        w.write(from_rows([_person_row(video="a")], "persons"))
        w.write(from_rows([_person_row(video="b"), _person_row(video="b", person=1)], "persons"))
    groups = list(iter_row_groups(path, "persons"))
    assert [g.num_rows for g in groups] == [1, 2]
