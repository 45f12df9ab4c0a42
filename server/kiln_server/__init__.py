"""kiln_server: the FastAPI service, job queue and workers. Not built yet (issue 4)."""

__all__: list[str] = []
