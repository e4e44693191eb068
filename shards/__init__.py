"""Webdataset shards: deterministic writing, object-store I/O, manifest commit, streaming reader."""
