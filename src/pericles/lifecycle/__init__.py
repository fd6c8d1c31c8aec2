"""The service's helpers: the pending queue, retention, idempotency keys and server caps.

Each holds one rule's bookkeeping; `pericles.service` decides when to use them.
"""
