"""The manifest: the only commit point of a dataset. Nothing it does not list exists."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_VERSION = 1


class ShardRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="path relative to the dataset root, e.g. shards/00000-0000.tar")
    samples: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tasks: dict[str, int] = Field(default_factory=dict)
    first_key: str = ""
    last_key: str = ""
    index_url: str = Field(default="", description="per-shard index: byte offsets of every sample and member")
    index_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = MANIFEST_VERSION
    name: str = "gem-4m"
    source: str
    source_uri: str = ""
    recipe: dict = Field(default_factory=dict)
    recipe_hash: str = ""
    backends: dict[str, dict] = Field(default_factory=dict)
    shards: list[ShardRecord]
    samples: int = Field(ge=0)
    bytes: int = Field(ge=0)
    tasks: dict[str, int] = Field(default_factory=dict)
    units: int = Field(ge=0, default=0)
    failed_units: int = Field(ge=0, default=0)
    filtered_units: int = Field(ge=0, default=0, description="units with nothing to emit (object not in view, ...)")
    sources: dict[str, dict] = Field(default_factory=dict, description="a mixture's sources: samples, target, weight, licence, "
                                     "part (the folder its shards are under)")

    @classmethod
    def from_shards(cls, shards: list[ShardRecord], **kw) -> Manifest:
        tasks: dict[str, int] = {}
        for s in shards:
            for t, n in s.tasks.items():
                tasks[t] = tasks.get(t, 0) + n
        return cls(
            shards=shards,
            samples=sum(s.samples for s in shards),
            bytes=sum(s.bytes for s in shards),
            tasks=dict(sorted(tasks.items())),
            **kw,
        )
