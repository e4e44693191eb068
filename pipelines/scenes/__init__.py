"""3D scenes (ScanNet, ScanNet++, ARKitScenes): readers, their VSI-Bench-style metadata, and
the spatial questions asked of them, as records the importers' build consumes."""
