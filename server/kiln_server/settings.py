"""The server's configuration: one Settings class, read from ``KILN_*`` environment variables.

Every limit the server enforces is a field here, so a deployment tunes it in one place
(``KILN_MAX_UPLOAD_BYTES=...``) and the tests can shrink it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .blobs.location import parse_location

__all__ = ["Settings", "get_settings"]

#: Tokens a deployment must never run with (copied from examples and docs).
_REFUSED_SECRETS = frozenset({"changeme", "change-me", "secret", "admin", "password", "token"})


class Settings(BaseSettings):
    """Where the server keeps its data, and every limit it enforces."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    data_dir: Path = Field(
        Path("kiln-data"), description="the SQLite database (kiln.db) and the local blob "
        "store (blobs/)")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite at <data_dir>/kiln.db")
    admin_token: str | None = Field(
        None, description="the first admin's token; generated and printed once when unset")
    dashboard_dir: Path = Field(
        Path(__file__).resolve().parent / "dashboard",
        description="the built web dashboard served at / (index.html and assets/): by "
        "default the package's, where `npm run build` in dashboard/ writes it")
    blob_store: str | None = Field(
        None, description="where datasets, checkpoints and weights are kept: unset, the "
        "directory <data_dir>/blobs; file:///an/absolute/path, a directory (local, or "
        "shared by every replica); s3://bucket/optional/prefix, a bucket of S3 or of an "
        "S3-compatible service (see s3_endpoint_url), with credentials from boto3's "
        "standard chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an "
        "instance role). Every replica of one database must use the same store: one whose "
        "store lacks the mark of the store the database names refuses to start")
    s3_endpoint_url: str | None = Field(
        None, description="the S3 service's URL when it is not AWS's (MinIO: "
        "http://minio:9000); path-style addressing is used then")
    s3_region: str | None = Field(
        None, description="the S3 bucket's region; unset, boto3's (AWS_DEFAULT_REGION, a "
        "profile)")
    blob_sweep_interval_s: float = Field(
        3600.0, gt=0, description="how often an API replica removes from the blob store "
        "the blobs no dataset or job refers to any more (superseded checkpoints and "
        "weights, those of deleted jobs)")
    blob_sweep_grace_s: float = Field(
        3600.0, ge=0, description="how long a blob is kept after it was last written, "
        "even if nothing refers to it (an upload is stored before the write that refers "
        "to it commits)")
    blob_retry_s: float = Field(
        30.0, gt=0, description="told to workers at claim: how long a worker keeps trying "
        "to fetch a dataset or checkpoint that the server cannot serve (404: the blob store "
        "the request reached lacks it; 503: the store is unreachable) before it releases "
        "the job back to the queue (it fails only once the blob is still missing at its "
        "fifth claim)")

    max_upload_bytes: int = Field(
        1 << 30, gt=0, description="the largest upload: a dataset, a checkpoint, weights")
    max_parameters: int = Field(100_000_000, gt=0,
                                description="the most parameters a job's model may have")
    max_model_bytes: int = Field(8 << 30, gt=0, description="estimated training memory")
    max_batch_size: int = Field(65_536, gt=0, description="the largest batch_size of a job")
    max_epochs: int = Field(100_000, gt=0, description="the most epochs a job may ask for")
    max_controls_per_job: int = Field(
        10_000, gt=0, description="the most controls (adjust, freeze, thaw, pause, ...) "
        "one job may be sent")
    max_body_bytes: int = Field(16 << 20, gt=0, description="JSON bodies and state reports")
    lease_s: float = Field(30.0, gt=0, description="a claim's lease; heartbeats renew it")
    heartbeat_interval_s: float = Field(5.0, gt=0, description="told to workers at claim")
    log_interval_s: float = Field(
        1.0, gt=0, description="told to workers at claim: how often a worker posts its step "
        "losses and epoch rows (each post costs the server a request, whatever its size)")
    checkpoint_interval_s: float = Field(
        10.0, ge=0, description="told to workers at claim: a worker checkpoints at the end of "
        "an epoch once its last checkpoint, or its start, is this old (and always at pause "
        "or shutdown): short epochs are cheaper to train again after a crash than to upload "
        "each time")
    controls_wait_max_s: float = Field(
        30.0, gt=0, description="the longest a worker's controls long-poll is held open")
    claim_wait_max_s: float = Field(
        30.0, ge=0, description="the longest a worker's claim is held while the queue is "
        "empty (a job queued meanwhile is handed out at once)")
    claim_batch_max: int = Field(
        64, gt=0, le=1000, description="the most claims an API replica answers in one "
        "transaction: those that arrived while the last one ran")
    reaper_interval_s: float = Field(
        5.0, gt=0, description="how often the server puts the jobs whose lease expired (a "
        "worker that died) back in the queue")
    page_size: int = Field(50, gt=0, description="a list's page when the request gives no "
                           "limit")
    max_page_size: int = Field(500, gt=0, description="the largest page a list request may "
                               "ask for")
    max_step_points: int = Field(2000, gt=0, description="steps returned after downsampling")
    db_pool_size: int = Field(
        16, gt=0, le=1000, description="PostgreSQL: the connections an API replica keeps "
        "open (as many again open while its threads need more). Keep replicas x 2 x this "
        "under the server's max_connections")
    auth_cache_s: float = Field(
        2.0, ge=0, description="how long an API replica keeps what a bearer token was found "
        "to be, rather than look it up on every request; a token revoked through a "
        "replica is refused by it at once, by the others within this long, and after "
        "`kiln-server token revoke` (the database alone) by all within this long. 0: look "
        "up every time")
    sqlite_recheck_s: float = Field(
        1.0, gt=0, description="on SQLite, how often a held request (a worker's claim or "
        "controls long-poll, an event stream) re-reads the database: the bound on the delay "
        "of what another process wrote to the same file. On PostgreSQL, replicas wake each "
        "other's held requests by LISTEN/NOTIFY, and those read only when woken")
    events_keepalive_s: float = Field(
        15.0, gt=0, description="an SSE stream silent this long sends a comment, so that "
        "proxies keep it open")
    events_retry_ms: int = Field(2000, gt=0, description="the reconnection delay an SSE "
                                 "stream asks clients to wait (its retry: field)")
    jobs_stream_max_s: float = Field(
        600.0, gt=0, description="how long a user's jobs stream stays open before it ends: "
        "its client reconnects with its last event id (EventSource does so by itself), "
        "and a token revoked meanwhile is refused then")

    @field_validator("admin_token")
    @classmethod
    def _refuse_default_secret(cls, v: str | None) -> str | None:
        if v is not None and (v.lower() in _REFUSED_SECRETS or len(v) < 16):
            raise ValueError("KILN_ADMIN_TOKEN must be a random string of at least 16 "
                             "characters, not a placeholder such as 'changeme'")
        return v

    @field_validator("blob_store")
    @classmethod
    def _check_blob_store(cls, v: str | None) -> str | None:
        if v is not None:
            parse_location(v)  # a ValueError naming KILN_BLOB_STORE
        return v

    @property
    def url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'kiln.db'}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings (read once)."""
    return Settings()
