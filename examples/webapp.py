"""A FastAPI application with the cluster's web pages mounted (the dashboard, the JSON API,
the metrics and the invite screen, under /tmi-cluster) and an endpoint that sends.

Run: ``uvicorn webapp:app`` (``pip install fastapi uvicorn``), with the cluster's settings.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import tmi_cluster
from tmi_cluster.web import create_app

settings = tmi_cluster.load_settings()  # ./tmi-cluster.toml and TMI_CLUSTER_* variables
cluster = tmi_cluster.Cluster(settings)
pages = create_app(settings)
if pages.state.credentials.generated:  # neither web.password nor web.token is set
    print("tmi-cluster pages: sign in as admin with", pages.state.credentials.password)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await cluster.aclose()
    await pages.state.view.aclose()  # a mounted app's lifespan is not run: closed here


app = FastAPI(lifespan=lifespan)
app.mount("/tmi-cluster", pages)


class Say(BaseModel):
    text: str


@app.post("/channels/{channel}/say")
async def say(channel: str, say: Say) -> dict[str, str | None]:
    """Say ``text`` in ``channel`` as the bot: 200 once written, 503 when it was not."""
    try:
        result = await cluster.send(channel, say.text, timeout_s=10)
    except ValueError as error:  # InvalidChannelError, UnsafeLineError, MessageTooLongError
        raise HTTPException(400, str(error)) from error
    except tmi_cluster.RedisUnavailableError as error:
        raise HTTPException(503, str(error)) from error
    if not result:
        raise HTTPException(503, f"{result.status}: {result.reason}")
    return {"status": result.status, "reason": result.reason}
