"""No reader crashes on any input: every file of each official fixture (LeRobot v3.0 by lerobot
0.6.1 and 0.4.4, v2.1, DROID, Bridge) is damaged in each
way a source can be wrong (missing, empty, cut, garbled, keys renamed, values of the wrong
type, indexes out of range), and the reader either reads or reports a SourceError naming
the file; no other exception escapes, and what it can still read, it reads."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.sources import EpisodeFailure, get_reader
from pipelines.sources.base import SourceError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATASETS = {"lerobot-v30": "lerobot", "lerobot-v30-lerobot044": "lerobot", "lerobot-v21": "lerobot", "rlds-droid": "droid", "rlds-bridge": "bridge"}


def _files(name: str) -> list[str]:
    root = FIXTURES / name
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- mutations: (name, applies to a file?, mutate the file in place) ----------------------

def _delete(p: Path):
    p.unlink()


def _empty(p: Path):
    p.write_bytes(b"")


def _cut(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _garble(p: Path):
    data = bytearray(p.read_bytes())
    for k in range(len(data) // 3, len(data) // 3 + 64):
        if k < len(data):
            data[k] ^= 0x5A
    p.write_bytes(bytes(data))


def _json_docs(p: Path):
    if p.suffix == ".jsonl":
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()], True
    return [json.loads(p.read_text())], False


def _write_docs(p: Path, docs, lines: bool):
    p.write_text("\n".join(json.dumps(d) for d in docs) + "\n" if lines else json.dumps(docs[0]))


def _json_each_key(transform):
    """One mutation per top-level key of the file's first JSON document."""

    def variants(p: Path):
        docs, lines = _json_docs(p)
        keys = list(docs[0]) if isinstance(docs[0], dict) else []
        for key in keys:
            def apply(q: Path, key=key):
                ds, ls = _json_docs(q)
                ds = [transform(dict(d), key) for d in ds]
                _write_docs(q, ds, ls)
            yield key, apply
    return variants


def _drop_key(d, key):
    d.pop(key, None)
    return d


def _wrong_type(d, key):
    d[key] = [] if not isinstance(d[key], list) else "x"
    return d


def _huge_index(d, key):
    if isinstance(d[key], int) and not isinstance(d[key], bool):
        d[key] = d[key] + 10_000
    return d


def _parquet_each_column(transform):
    def variants(p: Path):
        for column in pq.read_schema(p).names:
            def apply(q: Path, column=column):
                pq.write_table(transform(pq.read_table(q), column), q)
            yield column, apply
    return variants


def _drop_column(t: pa.Table, c: str) -> pa.Table:
    return t.drop_columns([c])


def _stringify_column(t: pa.Table, c: str) -> pa.Table:
    return t.set_column(t.column_names.index(c), c, pa.array([str(v) for v in t.column(c).to_pylist()]))


def _shift_column(t: pa.Table, c: str) -> pa.Table:
    col = t.column(c)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return t.set_column(t.column_names.index(c), c, pa.array([v + 10_000 for v in col.to_pylist()], col.type))
    return t


WHOLE_FILE = [("delete", _delete), ("empty", _empty), ("cut", _cut), ("garble", _garble)]
PER_KEY = {
    ".json": [("drop", _json_each_key(_drop_key)), ("wrongtype", _json_each_key(_wrong_type)), ("index", _json_each_key(_huge_index))],
    ".jsonl": [("drop", _json_each_key(_drop_key)), ("wrongtype", _json_each_key(_wrong_type)), ("index", _json_each_key(_huge_index))],
    ".parquet": [("dropcol", _parquet_each_column(_drop_column)), ("strcol", _parquet_each_column(_stringify_column)),
                 ("shift", _parquet_each_column(_shift_column))],
}


def _cases():
    for name in DATASETS:
        for rel in _files(name):
            for mname, fn in WHOLE_FILE:
                yield pytest.param(name, rel, fn, id=f"{name}:{rel}:{mname}")
            for mname, variants in PER_KEY.get(Path(rel).suffix, []):
                for key, apply in variants(FIXTURES / name / rel):
                    yield pytest.param(name, rel, apply, id=f"{name}:{rel}:{mname}:{key}")


def _read_all(source: str, root: Path) -> tuple[int, list[EpisodeFailure]]:
    """Episodes read (every frame decoded) and failures reported, as ls-episodes and a build read."""
    reader = get_reader(source)
    ok, failed = 0, []
    for part in reader.partitions(str(root)):
        for ep in reader.read(part):
            if isinstance(ep, EpisodeFailure):
                failed.append(ep)
                continue
            try:
                for cam in ep.cameras.values():
                    for i in range(len(cam)):
                        cam.decode(i)
                for d in ep.depth.values():
                    for i in range(len(d)):
                        d.metres(i) if hasattr(d, "metres") else None
            except SourceError as e:
                failed.append(EpisodeFailure(ep.episode_id, e))
                continue
            ok += 1
    return ok, failed


@pytest.mark.parametrize("name, rel, mutate", list(_cases()))
def test_a_damaged_source_is_read_or_reported_never_crashes(name, rel, mutate, tmp_path):
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    mutate(root / rel)
    try:
        ok, failed = _read_all(DATASETS[name], root)
    except SourceError as e:
        # the whole source could not be read: the error names a file of it
        assert str(tmp_path) in str(e) or e.file, str(e)
        return
    for f in failed:
        assert f.error.file and (f.error.episode or f.episode_id), f.error
