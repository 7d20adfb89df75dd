"""The grants' user tokens kept valid (hourly validation, refreshes, ended grants deleted),
against the simulator's Twitch OAuth and a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmi_cluster.config import Settings, load_settings
from tmi_cluster.coordinator.tokens import TokenKeeper
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id
from tmi_cluster.store import Store

from .helpers import free_port, run
from .test_simulator_eventsub import grant

pytestmark = pytest.mark.timeout(60)

KEY = "a grant key of at least thirty-two characters"


def settings_of(folder: Path, oauth: str) -> Settings:
    return load_settings(
        environ={
            "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
            "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
            "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{oauth}/oauth2",
            "TMI_CLUSTER_TWITCH__GRANT_KEY": KEY,
        },
        cwd=folder,
    )


def sealed(login: str, access: str, refresh: str) -> TokenGrant:
    return TokenGrant(
        user_id=user_id(login),
        login=login,
        scopes=("channel:bot",),
        access_token=access,
        refresh_token=refresh,
    )


@run
async def test_tokens_validated_refreshed_and_ended_grants_deleted(tmp_path: Path) -> None:
    async with ChatSimulator(control_port=0) as sim:
        base = f"http://{sim.host}:{sim.control_port}"
        settings = settings_of(tmp_path, base)
        sealer = Grants(KEY)
        good = grant(sim, "good", "channel:bot")
        stale_refresh = sim.oauth.token(
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "code": sim.oauth.issue_code(CLIENT_ID, "http://x/cb", "stale", ("channel:bot",)),
                "grant_type": "authorization_code",
                "redirect_uri": "http://x/cb",
            }
        )["refresh_token"]
        with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
            store.migrate()
            store.save_grants(
                [
                    sealer.seal(sealed("good", good, "unused-refresh-token")),
                    # an access token Twitch no longer accepts, a refresh token it does
                    sealer.seal(sealed("stale", "expired-access-token", stale_refresh)),
                    # neither: the user disconnected the application
                    sealer.seal(sealed("gone", "expired-access-token", "revoked-refresh")),
                ]
            )
            keeper = TokenKeeper(settings, store, every_s=3600, step_s=3600)
            try:
                ended = await keeper.step(store.grants())
                assert ended == {user_id("gone")}
                assert (keeper.validated, keeper.refreshed, keeper.ended) == (1, 1, 1)
                left = {g.login: sealer.open(g) for g in store.grants()}
                assert sorted(left) == ["good", "stale"]
                assert left["good"].access_token == good  # untouched
                renewed = left["stale"].access_token
                assert renewed != "expired-access-token"
                assert sim.oauth.validate(renewed)["login"] == "stale"  # a working token
                assert left["stale"].expires_at is not None
                # checked within the hour: the next step asks Twitch nothing
                assert await keeper.step(store.grants()) == set()
                assert (keeper.validated, keeper.refreshed) == (1, 1)
                assert keeper.problem is None
            finally:
                await keeper.aclose()


@run
async def test_twitch_not_answering_deletes_nothing(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, f"http://127.0.0.1:{free_port()}")
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        store.migrate()
        store.save_grant(Grants(KEY).seal(sealed("someone", "a-token", "a-refresh")))
        keeper = TokenKeeper(settings, store, every_s=3600, step_s=3600)
        try:
            assert await keeper.step(store.grants()) == set()
            assert [g.login for g in store.grants()] == ["someone"]
            assert keeper.problem is not None
            assert "did not answer" in keeper.problem
            assert "a-token" not in keeper.problem
        finally:
            await keeper.aclose()
