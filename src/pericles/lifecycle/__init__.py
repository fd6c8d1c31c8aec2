"""The service's helpers: the pending queue, retention and idempotency keys.

Each holds one rule's bookkeeping; `pericles.service` decides when to use them.
"""
