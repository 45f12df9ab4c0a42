"""kiln_client: Kiln's Python SDK and the ``kiln`` command line.

    from kiln_client import Client
    from kiln_engine import Chain, Dense, relu, Adam

    kiln = Client()                               # KILN_URL / KILN_TOKEN, or `kiln login`
    ds = kiln.datasets.upload("digits", x=x, y=y)
    job = kiln.jobs.submit(model=Chain(enc=Dense(64, 32, relu), dec=Dense(32, 10)),
                           optimiser=Adam(1e-3), loss="logitcrossentropy",
                           train=(ds, "x", "y"), batch_size=32, epochs=10)
    job.adjust("layers.enc", eta=1e-4)            # steer it while it trains
    job.wait()                                    # a live progress bar
    model = job.model()                           # the trained kiln_engine model

``AsyncClient`` has the same surface, awaited. Errors are typed (see ``_errors``).
Importing this package does not import the engine; it is loaded when a model or rule
is serialised or rebuilt.
"""

import logging as _logging

from ._async_client import AsyncClient, AsyncJob
from ._client import Client, Job
from ._config import config_path, forget_config, load_config, save_config
from ._errors import (
    APIError,
    AuthError,
    Conflict,
    JobFailed,
    KilnConnectionError,
    KilnError,
    NotFound,
    ServerError,
    ValidationError,
    WaitTimeout,
)
from ._types import ArrayInfo, Control, Dataset, EpochRow, Epochs, Event, Steps, User, Worker
from ._version import __version__

# A library logs (a dropped event stream, reopened) only where its user asked to see it.
_logging.getLogger("kiln_client").addHandler(_logging.NullHandler())

__all__ = [
    "APIError",
    "ArrayInfo",
    "AsyncClient",
    "AsyncJob",
    "AuthError",
    "Client",
    "Conflict",
    "Control",
    "Dataset",
    "EpochRow",
    "Epochs",
    "Event",
    "Job",
    "JobFailed",
    "KilnConnectionError",
    "KilnError",
    "NotFound",
    "ServerError",
    "Steps",
    "User",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "__version__",
    "config_path",
    "forget_config",
    "load_config",
    "save_config",
]
