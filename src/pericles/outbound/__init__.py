"""Outbound HTTP for callbacks: where a request may go (`guard`), how it is signed
(`signing`), and how one attempt is made and read (`sender`). Imports nothing of ours: the
rules of when to send and when to try again are the service's (`service/callbacks.py`)."""
