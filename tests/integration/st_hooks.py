"""Schemathesis hooks for the suite (loaded through SCHEMATHESIS_HOOKS): how to send a JSON Lines body."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()
