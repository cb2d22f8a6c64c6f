"""Deterministic accounts and transactions for the sandbox's test users.

Each user gets a current account and a savings account with about 60 transactions over
the 90 days up to the ledger's ``today``, drawn from an RNG seeded with the username, so
two banks built on the same day hold the same data. The newest card payments are still
``Pending``. :meth:`Ledger.advance_day` moves ``today`` forward, books every pending
transaction under a *new* ``TransactionId`` (real banks do this, and sync code must
cope with the pending entry vanishing) and adds the new day's pending card payments.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

CENT = Decimal("0.01")
HISTORY_DAYS = 90

# (merchant, merchant category code, smallest and largest amount in pence)
_CARD_MERCHANTS: tuple[tuple[str, str, int, int], ...] = (
    ("Tesco Stores", "5411", 450, 9200),
    ("Sainsbury's", "5411", 380, 7400),
    ("Transport for London", "4111", 280, 850),
    ("Pret A Manger", "5814", 325, 1250),
    ("Amazon UK", "5999", 599, 12000),
    ("Shell", "5541", 3000, 8000),
    ("Boots", "5912", 250, 4000),
)
# (day of month, payee, amount in pence)
_DIRECT_DEBITS: tuple[tuple[int, str, int], ...] = (
    (1, "Council Tax", 14500),
    (15, "Octopus Energy", 8900),
    (20, "Netflix", 1099),
)


@dataclass
class Transaction:
    transaction_id: str
    account_id: str
    amount: Decimal
    credit: bool
    status: str  # "Booked" or "Pending", as OBIE names them
    booked_at: datetime
    value_at: datetime | None
    information: str
    bank_code: tuple[str, str]  # ISO 20022 BankTransactionCode (Code, SubCode)
    merchant: tuple[str, str] | None = None  # (MerchantName, MerchantCategoryCode)
    counterparty: tuple[str, str] | None = None  # (Name, sort code + account number)
    reference: str | None = None


@dataclass
class Account:
    account_id: str
    owner: str
    holder_name: str
    nickname: str
    sub_type: str  # OBIE AccountSubType: "CurrentAccount", "Savings"
    identification: str  # sort code (6 digits) + account number (8 digits)
    opening_date: date
    opening_balance: Decimal
    overdraft: Decimal | None
    currency: str = "GBP"
    transactions: list[Transaction] = field(default_factory=list)
    seq: int = 0

    def new_transaction_id(self) -> str:
        self.seq += 1
        return "txn-" + hashlib.sha256(f"{self.account_id}/{self.seq}".encode()).hexdigest()[:20]

    def booked_balance(self) -> Decimal:
        return self.opening_balance + sum(
            (_signed(t) for t in self.transactions if t.status == "Booked"), Decimal(0)
        )

    def available_balance(self) -> Decimal:
        # Pending debits already reduce what can be spent; pending credits do not add yet.
        pending_debits = sum(
            (t.amount for t in self.transactions if t.status == "Pending" and not t.credit),
            Decimal(0),
        )
        return self.booked_balance() - pending_debits


def _signed(txn: Transaction) -> Decimal:
    return txn.amount if txn.credit else -txn.amount


def _pence(rng: random.Random, low: int, high: int) -> Decimal:
    return (Decimal(rng.randint(low, high)) * CENT).quantize(CENT)


def _at(day: date, rng: random.Random, first_hour: int = 7, last_hour: int = 21) -> datetime:
    moment = time(rng.randint(first_hour, last_hour), rng.randint(0, 59), rng.randint(0, 59))
    return datetime.combine(day, moment, UTC)


class Ledger:
    """Accounts of every test user; thread-safe, since tests call it from outside the loop."""

    def __init__(self, users: Iterable[str], today: date) -> None:
        self.lock = threading.RLock()
        self.today = today
        self.accounts: dict[str, Account] = {}
        for user in users:
            for account in _seed_user(user, today):
                self.accounts[account.account_id] = account

    def now(self) -> datetime:
        """The ledger's clock: its ``today`` at the current UTC time of day."""
        return datetime.combine(self.today, datetime.now(UTC).time(), UTC)

    def accounts_of(self, user: str) -> list[Account]:
        with self.lock:
            return [a for a in self.accounts.values() if a.owner == user]

    def account_of(self, user: str, account_id: str) -> Account | None:
        with self.lock:
            account = self.accounts.get(account_id)
            return account if account is not None and account.owner == user else None

    def advance_day(self) -> None:
        with self.lock:
            self.today += timedelta(days=1)
            booking_time = datetime.combine(self.today, time(6, 0), UTC)
            for account in self.accounts.values():
                _book_pending(account, booking_time)
                rng = random.Random(f"sandbox-day:{account.account_id}:{self.today.isoformat()}")  # noqa: S311 - test data, not security
                if account.sub_type == "CurrentAccount":
                    for _ in range(rng.randint(1, 3)):
                        _card_payment(account, rng, self.today, "Pending")


def _book_pending(account: Account, booking_time: datetime) -> None:
    kept: list[Transaction] = []
    booked: list[Transaction] = []
    for txn in account.transactions:
        if txn.status != "Pending":
            kept.append(txn)
            continue
        booked.append(
            replace(
                txn,
                transaction_id=account.new_transaction_id(),
                status="Booked",
                booked_at=booking_time,
                value_at=txn.booked_at,
            )
        )
    account.transactions = kept + booked


def _card_payment(account: Account, rng: random.Random, day: date, status: str) -> None:
    merchant, mcc, low, high = rng.choice(_CARD_MERCHANTS)
    moment = _at(day, rng)
    account.transactions.append(
        Transaction(
            transaction_id=account.new_transaction_id(),
            account_id=account.account_id,
            amount=_pence(rng, low, high),
            credit=False,
            status=status,
            booked_at=moment,
            value_at=moment if status == "Booked" else None,
            information=f"CARD PAYMENT TO {merchant.upper()}",
            bank_code=("CustomerCardTransactions", "PointOfSale"),
            merchant=(merchant, mcc),
        )
    )


def _transfer(
    account: Account,
    day: date,
    amount: Decimal,
    credit: bool,
    information: str,
    counterparty: tuple[str, str] | None,
    code: tuple[str, str],
) -> None:
    moment = datetime.combine(day, time(5, 30), UTC)
    account.transactions.append(
        Transaction(
            transaction_id=account.new_transaction_id(),
            account_id=account.account_id,
            amount=amount,
            credit=credit,
            status="Booked",
            booked_at=moment,
            value_at=moment,
            information=information,
            bank_code=code,
            counterparty=counterparty,
            reference=information[:18].upper(),
        )
    )


def _seed_user(user: str, today: date) -> list[Account]:
    rng = random.Random(f"sandbox-ledger:{user}")  # noqa: S311 - test data, not security
    holder = f"{user.title()} Sandbox"
    sort_code = f"60{rng.randint(0, 9999):04d}"

    def account(index: int, nickname: str, sub_type: str, opening: int) -> Account:
        key = hashlib.sha256(f"sandbox-account:{user}:{index}".encode()).hexdigest()
        return Account(
            account_id=f"acc-{key[:16]}",
            owner=user,
            holder_name=holder,
            nickname=nickname,
            sub_type=sub_type,
            identification=sort_code + f"{rng.randint(0, 99_999_999):08d}",
            opening_date=today - timedelta(days=rng.randint(400, 4000)),
            opening_balance=_pence(rng, opening, opening * 2),
            overdraft=Decimal("500.00") if sub_type == "CurrentAccount" else None,
        )

    current = account(0, "Everyday", "CurrentAccount", 120_000)
    savings = account(1, "Rainy day", "Savings", 400_000)
    salary = _pence(rng, 210_000, 340_000)
    employer = (
        f"{user.title()} Employer Ltd",
        f"20{rng.randint(0, 9999):04d}{rng.randint(0, 99_999_999):08d}",
    )
    for offset in range(HISTORY_DAYS - 1, -1, -1):
        day = today - timedelta(days=offset)
        if day.day == 25:
            _transfer(
                current,
                day,
                salary,
                True,
                "SALARY",
                employer,
                ("ReceivedCreditTransfer", "DomesticCreditTransfer"),
            )
        for dom, payee, pence in _DIRECT_DEBITS:
            if day.day == dom:
                _transfer(
                    current,
                    day,
                    Decimal(pence) * CENT,
                    False,
                    f"DIRECT DEBIT {payee.upper()}",
                    None,
                    ("IssuedDirectDebit", "DirectDebitPayment"),
                )
        if day.day == 26:
            amount = Decimal("200.00")
            _transfer(
                current,
                day,
                amount,
                False,
                "TRANSFER TO SAVINGS",
                (holder, savings.identification),
                ("IssuedCreditTransfer", "InternalTransfer"),
            )
            _transfer(
                savings,
                day,
                amount,
                True,
                "TRANSFER FROM CURRENT",
                (holder, current.identification),
                ("ReceivedCreditTransfer", "InternalTransfer"),
            )
        if day.day == 1:
            _transfer(
                savings,
                day,
                _pence(rng, 300, 1500),
                True,
                "INTEREST",
                None,
                ("ReceivedCreditTransfer", "Interest"),
            )
        if rng.random() < 0.45:
            _card_payment(current, rng, day, "Pending" if offset <= 1 else "Booked")
    if not any(t.status == "Pending" for t in current.transactions):
        _card_payment(current, rng, today, "Pending")
    return [current, savings]
