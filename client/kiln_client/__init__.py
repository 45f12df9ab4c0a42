"""kiln_client: the Python SDK and the `kiln` command line. Not built yet."""

__all__: list[str] = []
