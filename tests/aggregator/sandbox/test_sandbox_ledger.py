from __future__ import annotations

from datetime import date, timedelta

from aggregator.sandbox import TEST_USERS
from aggregator.sandbox.ledger import HISTORY_DAYS, Ledger

DAY = date(2025, 3, 14)


def _snapshot(ledger: Ledger) -> list[tuple[str, str, str, str]]:
    return [
        (t.transaction_id, str(t.amount), t.status, t.booked_at.isoformat())
        for a in ledger.accounts.values()
        for t in a.transactions
    ]


def test_ledger_is_deterministic_per_user_and_day() -> None:
    assert _snapshot(Ledger(TEST_USERS, DAY)) == _snapshot(Ledger(TEST_USERS, DAY))


def test_each_test_user_has_two_accounts_and_about_sixty_transactions() -> None:
    ledger = Ledger(TEST_USERS, DAY)

    for user in TEST_USERS:
        accounts = ledger.accounts_of(user)
        transactions = [t for a in accounts for t in a.transactions]
        assert len(accounts) == 2
        assert 45 <= len(transactions) <= 75
        assert any(t.status == "Pending" for t in transactions)
        oldest = min(t.booked_at.date() for t in transactions)
        assert oldest >= DAY - timedelta(days=HISTORY_DAYS)
        assert max(t.booked_at.date() for t in transactions) <= DAY


def test_users_get_different_data() -> None:
    ledger = Ledger(TEST_USERS, DAY)
    alice, bob = ledger.accounts_of("alice"), ledger.accounts_of("bob")

    assert {a.account_id for a in alice}.isdisjoint(a.account_id for a in bob)
    assert alice[0].identification != bob[0].identification


def test_advance_day_books_pending_with_new_ids_and_keeps_balances_consistent() -> None:
    ledger = Ledger(TEST_USERS, DAY)
    account = ledger.accounts_of("alice")[0]
    pending = [t for t in account.transactions if t.status == "Pending"]
    available_before = account.available_balance()

    ledger.advance_day()

    ids = {t.transaction_id for t in account.transactions}
    assert ledger.today == DAY + timedelta(days=1)
    assert not {t.transaction_id for t in pending} & ids
    booked_again = [
        t
        for t in account.transactions
        if t.status == "Booked" and t.value_at in {p.booked_at for p in pending}
    ]
    assert len(booked_again) == len(pending)
    new_pending = [t for t in account.transactions if t.status == "Pending"]
    assert new_pending
    # Booking moves money from "pending" to "booked"; only the new day's payments change
    # what is available.
    assert account.available_balance() == available_before - sum(t.amount for t in new_pending)


def test_accounts_are_private_to_their_owner() -> None:
    ledger = Ledger(TEST_USERS, DAY)
    alice_account = ledger.accounts_of("alice")[0].account_id

    assert ledger.account_of("bob", alice_account) is None
    assert ledger.account_of("alice", alice_account) is not None
