"""Publishing Prefect artifacts off the hot path.

A trace artifact is one API call the Prefect server is slow to store, next to a cell's own work
(bench/PROFILE.md). Awaiting it inside each cell would hold the cell's concurrency slot for that
long; instead cells hand their artifact to this publisher, which
posts them in the background with a few connections, linked to the cell's task run, and the flow
waits for the backlog (`flush`) before it ends, so none is lost. The posts are plain httpx with
a ready JSON body: Prefect's client spends more CPU per artifact building and validating models
than the rest of a cell's own work.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx


class ArtifactPublisher:
    """Background poster of markdown artifacts on the current event loop."""

    def __init__(self, concurrency: int = 8) -> None:
        self._semaphore: asyncio.Semaphore | None = None
        self._concurrency = concurrency
        self._pending: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self.failures: list[str] = []

    def publish(
        self,
        *,
        key: str,
        markdown: str,
        description: str,
        task_run_id: UUID | None,
        flow_run_id: UUID | None,
    ) -> None:
        """Queue one artifact; returns at once."""
        task = asyncio.get_running_loop().create_task(
            self._post(key, markdown, description, task_run_id, flow_run_id)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _http(self) -> httpx.AsyncClient | None:
        """A client for the configured Prefect API, or None for an in-process (ephemeral) one."""
        if self._client is None:
            from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

            url = PREFECT_API_URL.value()
            if not url:
                return None
            key = PREFECT_API_KEY.value()
            headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
            self._client = httpx.AsyncClient(base_url=url, headers=headers, timeout=60)
        return self._client

    async def _post(
        self,
        key: str,
        markdown: str,
        description: str,
        task_run_id: UUID | None,
        flow_run_id: UUID | None,
    ) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        body = {
            "key": key,
            "type": "markdown",
            "data": markdown,
            "description": description,
            "task_run_id": str(task_run_id) if task_run_id else None,
            "flow_run_id": str(flow_run_id) if flow_run_id else None,
        }
        async with self._semaphore:
            try:
                client = self._http()
                if client is None:
                    from prefect.artifacts import acreate_markdown_artifact

                    await acreate_markdown_artifact(
                        key=key, markdown=markdown, description=description
                    )
                    return
                response = await client.post("/artifacts/", json=body)
                response.raise_for_status()
            except Exception as exc:  # noqa: BLE001 - an artifact must never fail a cell
                self.failures.append(f"{key}: {type(exc).__name__}: {exc}")

    async def flush(self) -> None:
        """Wait until every queued artifact is posted, then release the client."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
