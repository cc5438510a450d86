"""The HTTP API (FastAPI): thin routes over the services, under ``/api/v1``."""
