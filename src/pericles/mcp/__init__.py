"""The Model Context Protocol endpoint (`handler-serve --mcp`) and its stdio bridge.

A second way in to the same service, beside the REST routes: `endpoint` mounts it on the
app; `tools` holds the payload tools agents may call, `actions` one tool per named action,
`calls` what they share, `gate` which a token may use; `excerpt` bounds the output they
are shown and `bridge` carries stdio-only clients over to the HTTP endpoint.
"""
