"""The registry client: auth, manifests, blobs, redirects and error mapping."""
