"""Linking end to end over real sockets: app backend, Link page, sandbox bank, callback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from aggregator import audit
from aggregator.ids import parse_id
from aggregator.models import (
    Account,
    AuditEvent,
    Connection,
    Credential,
    LinkSession,
    LinkStatus,
)
from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway


async def test_users_in_eu_and_us_link_and_read_their_accounts(gateway: Gateway) -> None:
    for region in ("eu", "us"):
        _user_id, connection_id = await gateway.link(region, f"customer-{region}")
        assert parse_id(connection_id) == ("con", region)
        connection = (await gateway.api.get(f"/v1/connections/{connection_id}")).json()
        assert connection["status"] == "active"
        assert connection["bank_id"] == f"sandbox-{region}"
        accounts = (await gateway.api.get(f"/v1/connections/{connection_id}/accounts")).json()
        names = sorted(a["name"] for a in accounts["data"])
        assert names == ["Everyday", "Rainy day"]
        assert all(a["balance"] and a["balance"]["currency"] == "GBP" for a in accounts["data"])
        everyday = next(a for a in accounts["data"] if a["name"] == "Everyday")
        page = (await gateway.api.get(f"/v1/accounts/{everyday['id']}/transactions",
                                      params={"limit": 5})).json()
        assert len(page["data"]) == 5
        assert all(t["description"] and t["account_id"] == everyday["id"] for t in page["data"])
        assert parse_id(everyday["id"]).region == region
    # Each region's store holds only its own user's connection, and its audit chain
    # (session created, bank chosen, connection linked, synced) verifies.
    for region in ("eu", "us"):
        async with gateway.services.router.reader(region) as session:
            ids = (await session.execute(select(Connection.id))).scalars().all()
            actions = (await session.execute(
                select(AuditEvent.action).order_by(AuditEvent.seq)
            )).scalars().all()
        assert len(ids) == 1
        assert all(parse_id(i).region == region for i in ids)
        # The eu sandbox gives each application its own client (connectors/banks/
        # sandbox-eu.toml, [registration]): registered at the app's first link there.
        assert [a for a in actions if not a.startswith("bank_client.")][-4:] == [
            "link_session.created", "link_session.authorizing", "connection.linked",
            "connection.synced",
        ]
        assert ("bank_client.registered" in actions) == (region == "eu")
        assert (await audit.verify(gateway.services.router.engine(region), region)).ok


async def test_the_app_redirect_carries_only_the_connection_id_and_outcome(
    gateway: Gateway,
) -> None:
    user_id = await gateway.user("eu")
    walk = await gateway.walk(await gateway.link_url(user_id))
    assert walk.landed is not None
    assert walk.landed.startswith(APP_REDIRECT + "?")
    assert set(walk.landed_query) == {"connection_id", "outcome"}
    # The page, the bank and the callback each answered with a redirect or a page.
    statuses = [status for _, _, status in walk.hops]
    assert statuses[0] == 200
    assert 303 in statuses
    # PAR (RFC 9126 §4): the front channel carried only the client id and the reference.
    authorize = next(url for _, url, _ in walk.hops if "/authorize?" in url)
    assert set(parse_qs(urlsplit(authorize).query)) == {"client_id", "request_uri"}
    async with gateway.services.router.reader("eu") as session:
        link = (await session.execute(select(LinkSession))).scalar_one()
    assert link.status is LinkStatus.COMPLETED
    assert link.connection_id == walk.landed_query["connection_id"]


async def test_update_mode_re_consents_and_keeps_the_connection_and_its_data(
    gateway: Gateway,
) -> None:
    user_id, connection_id = await gateway.link("eu")
    before = (await gateway.api.get(f"/v1/connections/{connection_id}/accounts")).json()
    custody = gateway.services.custody["eu"]
    async with gateway.services.router.reader("eu") as session:
        old = (await session.execute(select(Credential))).scalar_one()
        key = await custody.data_keys.load(session, old.user_id)
    old_refresh = await custody.sealer.open_from(key, old, "refresh_token_sealed")

    walk = await gateway.walk(await gateway.link_url(user_id, connection_id=connection_id))

    assert walk.landed_query == {"connection_id": connection_id, "outcome": "success"}
    after = (await gateway.api.get(f"/v1/connections/{connection_id}/accounts")).json()
    assert [a["id"] for a in after["data"]] == [a["id"] for a in before["data"]]
    async with gateway.services.router.reader("eu") as session:
        connections = (await session.execute(select(func.count(Connection.id)))).scalar_one()
        new = (await session.execute(select(Credential))).scalar_one()
        accounts = (await session.execute(select(func.count(Account.id)))).scalar_one()
    assert connections == 1
    assert accounts == 2
    assert new.id == old.id
    assert new.version > old.version
    assert new.refresh_token_sealed != old.refresh_token_sealed
    # The superseded grant is revoked at the bank; the new one works.
    assert await _bank_refresh(gateway, "sandbox-eu", old_refresh) == "invalid_grant"
    assert (await gateway.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 200


async def test_denied_consent_returns_outcome_denied_and_creates_nothing(
    gateway: Gateway,
) -> None:
    user_id = await gateway.user("eu")
    walk = await gateway.walk(await gateway.link_url(user_id), decision="deny")
    assert walk.landed_query == {"outcome": "denied"}
    async with gateway.services.router.reader("eu") as session:
        assert (await session.execute(select(func.count(Connection.id)))).scalar_one() == 0
        link = (await session.execute(select(LinkSession))).scalar_one()
    assert link.status is LinkStatus.FAILED


async def test_deleting_a_connection_revokes_the_grant_at_the_bank(gateway: Gateway) -> None:
    _, connection_id = await gateway.link("us")
    custody = gateway.services.custody["us"]
    async with gateway.services.router.reader("us") as session:
        credential = (await session.execute(select(Credential))).scalar_one()
        key = await custody.data_keys.load(session, credential.user_id)
    refresh_token = await custody.sealer.open_from(key, credential, "refresh_token_sealed")
    assert refresh_token

    answer = await gateway.api.delete(f"/v1/connections/{connection_id}")

    assert answer.status_code == 200
    assert answer.json()["status"] == "revoked"
    assert await _bank_refresh(gateway, "sandbox-us", refresh_token) == "invalid_grant"


async def _bank_refresh(gateway: Gateway, bank_id: str, refresh_token: str | None) -> str:
    """Present a refresh token at the bank as the gateway's client; the error code."""
    assert refresh_token
    oauth = gateway.services.banks.oauth(bank_id)
    answer = await gateway.browser.post(
        (await oauth.metadata()).token_endpoint,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(DEV_CLIENT_ID, DEV_CLIENT_SECRET),
    )
    return str(answer.json().get("error", "ok"))
