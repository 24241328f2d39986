"""The hub's HTTP API: a read-only Confluent-compatible Schema Registry, the feed catalog and a health check.

`hub serve` runs it (uvicorn); `hub stack up` starts it as the stack's `api` process. This
package's __init__ imports nothing heavy, so `hub stack` can use `hub.stack.api_process` cheaply.
"""
