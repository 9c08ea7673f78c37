"""Settings from the environment, prefix `GLOW_` (pydantic-settings), documented in the README.

The defaults suit a fresh laptop: a SQLite file under `data/` and Prefect's embedded server.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLOW_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Scenario files, images, store, results.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the store; default sqlite:///<data_dir>/glow.db."
    )
    results_dir: Path | None = Field(None, description="Default <data_dir>/results.")
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body `glow serve` accepts (413 above it), checked while "
        "the body is read.",
    )
    # Client side of the HTTP API (glow tests ...).
    instance_url: str = Field("http://127.0.0.1:8484", description="Base URL of `glow serve`.")
    token: str | None = Field(None, description="Bearer token for the HTTP API.")

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'glow.db'}"

    @property
    def results_root(self) -> Path:
        return self.results_dir or self.data_dir / "results"


@lru_cache
def get_settings() -> Settings:
    return Settings()
