"""The HTTP service: FastAPI app, API keys and roles, audit, metrics (``facegate serve``)."""
