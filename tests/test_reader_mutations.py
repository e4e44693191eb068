"""No reader crashes on any input: every file of each official fixture (LeRobot v3.0 by lerobot
0.6.1 and 0.4.4, v2.1, DROID, Bridge) and of each fixture in a published layout (AgiBot World
Alpha, RoboMIND) is damaged in each way a source can be wrong (missing, empty, cut, garbled,
keys renamed, values of the wrong type, indexes out of range, HDF5 datasets dropped, mistyped
or cut short, CSV columns dropped), and the reader either reads or reports a SourceError
naming the file; no other exception escapes, and what it can still read, it reads: damage to
one episode's files leaves the other episodes of AgiBot and RoboMIND readable."""

import csv
import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.sources import EpisodeFailure, get_reader
from pipelines.sources.base import SourceError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATASETS = {"lerobot-v30": "lerobot", "lerobot-v30-lerobot044": "lerobot", "lerobot-v21": "lerobot", "rlds-droid": "droid", "rlds-bridge": "bridge",
            "agibot-alpha": "agibot", "robomind": "robomind"}


def _owner(name: str, rel: str) -> str | None:
    """The one episode a file of a published-layout fixture belongs to (None: shared)."""
    parts = rel.split("/")
    if name == "agibot-alpha" and parts[0] in ("observations", "parameters", "proprio_stats"):
        return f"{parts[1]}-{parts[2]}"
    if name == "robomind" and rel.endswith("/trajectory.hdf5"):
        return rel.rsplit("/trajectory.hdf5", 1)[0]
    return None


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


def _record(doc):
    """The object a JSON document's keys are taken from: itself, or a list's first object."""
    return doc[0] if isinstance(doc, list) and doc and isinstance(doc[0], dict) else doc


def _json_each_key(transform):
    """One mutation per top-level key of the file's first JSON document (of its first record,
    for a list of records)."""

    def variants(p: Path):
        docs, lines = _json_docs(p)
        first = _record(docs[0])
        keys = list(first) if isinstance(first, dict) else []
        for key in keys:
            def apply(q: Path, key=key):
                ds, ls = _json_docs(q)
                ds = [[transform(dict(d[0]), key), *d[1:]] if _record(d) is not d else transform(dict(d), key) for d in ds]
                _write_docs(q, ds, ls)
            yield key, apply
    return variants


def _paths(obj, prefix=(), depth=4):
    """Key paths below the top level, following dicts and the first item of lists."""
    if depth == 0:
        return
    items = obj.items() if isinstance(obj, dict) else ([(0, obj[0])] if isinstance(obj, list) and obj else [])
    for k, v in items:
        if prefix and isinstance(k, str):
            yield (*prefix, k)
        yield from _paths(v, (*prefix, k), depth - 1)


def _json_each_nested(transform):
    """One mutation per nested key path (e.g. label_info/action_config/0/end_frame) of the
    first record of a file that is a list of records (task_info, annotations)."""

    def variants(p: Path):
        docs, _ = _json_docs(p)
        if _record(docs[0]) is docs[0]:
            return
        for path in _paths(docs[0][0]):
            def apply(q: Path, path=path):
                ds, ls = _json_docs(q)
                parent = ds[0][0]
                for k in path[:-1]:
                    parent = parent[k]
                if isinstance(parent, dict) and path[-1] in parent:
                    transform(parent, path[-1])
                _write_docs(q, ds, ls)
            yield "/".join(map(str, path)), apply
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


def _h5_each_dataset(transform):
    """One mutation per dataset of an HDF5 file."""

    def variants(p: Path):
        names: list[str] = []
        with h5py.File(p, "r") as h:
            h.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            def apply(q: Path, name=name):
                with h5py.File(q, "r+") as h:
                    transform(h, name)
            yield name, apply
    return variants


def _h5_drop(h, name):
    del h[name]


def _h5_wrong_type(h, name):
    del h[name]
    h[name] = "x"


def _h5_cut(h, name):
    ds = h[name]
    if ds.ndim:
        data, dtype = ds[()], ds.dtype
        del h[name]
        h.create_dataset(name, data=data[: len(data) // 2], dtype=dtype)


def _h5_attrs(p: Path):
    """Each root attribute dropped, then set to a string."""
    with h5py.File(p, "r") as h:
        keys = list(h.attrs)
    for key in keys:
        def drop(q: Path, key=key):
            with h5py.File(q, "r+") as h:
                del h.attrs[key]

        def mistype(q: Path, key=key):
            with h5py.File(q, "r+") as h:
                h.attrs[key] = np.array([1.5, 2.5])
        yield f"drop-{key}", drop
        yield f"mistype-{key}", mistype


def _csv_each_column(p: Path):
    header = next(csv.reader(io.StringIO(p.read_text())))
    for k, column in enumerate(header):
        def apply(q: Path, k=k):
            rows = list(csv.reader(io.StringIO(q.read_text())))
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([r[:k] + r[k + 1 :] for r in rows])
            q.write_text(buf.getvalue())
        yield column or f"#{k}", apply


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
_HDF5 = [("dropds", _h5_each_dataset(_h5_drop)), ("strds", _h5_each_dataset(_h5_wrong_type)), ("cutds", _h5_each_dataset(_h5_cut)),
         ("attrs", _h5_attrs)]
PER_KEY = {
    ".json": [("drop", _json_each_key(_drop_key)), ("wrongtype", _json_each_key(_wrong_type)), ("index", _json_each_key(_huge_index)),
              ("dropnested", _json_each_nested(_drop_key)), ("wrongnested", _json_each_nested(_wrong_type)),
              ("indexnested", _json_each_nested(_huge_index))],
    ".hdf5": _HDF5,
    ".h5": _HDF5,
    ".csv": [("dropcol", _csv_each_column)],
    ".jsonl": [("drop", _json_each_key(_drop_key)), ("wrongtype", _json_each_key(_wrong_type)), ("index", _json_each_key(_huge_index))],
    ".parquet": [("dropcol", _parquet_each_column(_drop_column)), ("strcol", _parquet_each_column(_stringify_column)),
                 ("shift", _parquet_each_column(_shift_column))],
}


# files a reader never opens: damaged whole only (their inner structure cannot matter)
UNREAD = {"agibot-alpha": ("proprio_stats/", "_extrinsic_params_aligned.json")}


def _cases():
    for name in DATASETS:
        for rel in _files(name):
            for mname, fn in WHOLE_FILE:
                yield pytest.param(name, rel, fn, id=f"{name}:{rel}:{mname}")
            if any(u in rel for u in UNREAD.get(name, ())):
                continue
            for mname, variants in PER_KEY.get(Path(rel).suffix, []):
                for key, apply in variants(FIXTURES / name / rel):
                    yield pytest.param(name, rel, apply, id=f"{name}:{rel}:{mname}:{key}")


def _read_all(source: str, root: Path) -> tuple[list[str], list[EpisodeFailure]]:
    """Episodes read (every frame decoded) and failures reported, as ls-episodes and a build read."""
    reader = get_reader(source)
    ok, failed = [], []
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
            ok.append(ep.episode_id)
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
        # ... and it is not one episode's file
        assert name not in _EPISODES or not _owner(name, rel), str(e)
        return
    for f in failed:
        assert f.error.file and (f.error.episode or f.episode_id), f.error
    owner = _owner(name, rel)
    if name in ("agibot-alpha", "robomind"):
        for f in failed:
            assert f.error.field, f.error
        # damage to one episode's files costs that episode at most
        assert not owner or all(f.episode_id == owner for f in failed), [str(f.error) for f in failed]
        assert not owner or len(ok) >= len(_EPISODES[name]) - 1, (ok, [str(f.error) for f in failed])


_EPISODES = {"agibot-alpha": ["327-648642", "327-648649"],
             "robomind": [_owner("robomind", r) for r in _files("robomind") if r.endswith("/trajectory.hdf5")]}


def test_the_published_layout_fixtures_read_whole():
    for name, ids in _EPISODES.items():
        ok, failed = _read_all(DATASETS[name], FIXTURES / name)
        assert not failed and sorted(ok) == sorted(ids), (name, failed)
