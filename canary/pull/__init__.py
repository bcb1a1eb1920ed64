"""The steps of one image pull: its state, the walk over manifests and blobs, its referrers."""
