"""Envelope and Sealer against the pooled-nonce AES-GCM primitive; provider calls under load.

Rates (64-byte token, seal then open, one thread, interleaved rounds, medians of wall-clock
and of process CPU time; on a shared machine quote the CPU ratios, which other processes'
time slices do not inflate):

- the limit: a reused ``AESGCM`` object (its bound methods) encrypting and decrypting with
  nonces popped from a pool filled 1,024 at a time by ``os.urandom`` — exactly how the
  envelope gets its nonces, and no less tightly written, so the ratio is the envelope's
  own overhead (header, key commitment check, AAD fingerprint, seal accounting, key cache
  with TTL), not the cost of ``getrandom``;
- ``Envelope.seal`` + ``Envelope.open`` under a cached data key (target >= 0.7);
- the Sealer path the gateway uses: ``Sealer.seal_into`` (the column's AAD from the
  :func:`aggregator.sealing.field_of` layout, the seal ledger's check, the seal, the ORM
  attribute set) then ``Sealer.open_from``, in an event loop (target >= 0.5);
- peers, same payload and AAD: Google Tink's AEAD (AES256_GCM keyset; target: ours >= 1.0
  of it) and the AWS Encryption SDK (raw AES master key, data key cached by its caching
  materials manager), printed for scale. Skipped with a note when not installed
  (``pip install -e '.[bench]'``).

Provider calls: a population of ``--users`` (1M) users whose reads follow a Zipf-like
skew (s = 1.1, the shape of per-user traffic), ``--opens`` opens over ``--hours`` of
simulated time through an envelope with the gateway's configured cache
(``key_cache_size`` 10,000, ``key_cache_ttl`` 300 s, so the TTL is far shorter than the
run). The limit is an unbounded cache with the same TTL: every call it makes is
unavoidable. Ratio: ideal calls / our calls (1.0 = the cache size costs nothing).

Prints the load average before and after, and ``RESULT envelope_vs_pooled_primitive=…
sealer_vs_pooled_primitive=… envelope_vs_pooled_primitive_cpu=… sealer_vs_pooled_primitive_cpu=…
envelope_vs_tink=… aws_sdk_slower_by=… provider_calls_per_10k_opens=…
provider_calls_vs_unbounded=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import create_async_engine

from aggregator.datakeys import SealLedger
from aggregator.models import Transaction
from aggregator.sealing import Sealer
from vault import Envelope, KeyProvider, LocalKeyringConfig, WrappedKey, open_provider

PAYLOAD = b"rt_" + b"x" * 61  # a 64-byte refresh token
AAD = b"credentials|refresh_token|crd_eu_0123456789|usr_eu_0123456789|eu"
CACHE_SIZE, CACHE_TTL = 10_000, 300.0  # Settings.key_cache_size, key_cache_ttl


class CountingProvider:
    """Passes through to a real provider and counts unwraps (the calls a KMS would bill)."""

    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.kek_id = inner.kek_id
        self.unwraps = 0

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        self.unwraps += 1
        return self.inner.unwrap(wrapped)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def rate(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """Operations per second of wall-clock and of this process's CPU time.

    On a shared machine the wall clock also counts the time slices other processes took;
    CPU time does not, so its ratios hold up under load (both are printed).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def pooled_primitive() -> Callable[[], None]:
    """The limit, written as tightly as the envelope takes its nonces (try ``pop``)."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    pool: list[bytes] = []
    take = pool.pop

    def refill() -> bytes:
        batch = os.urandom(12 * 1024)
        pool.extend(batch[i:i + 12] for i in range(0, len(batch), 12))
        return take()

    encrypt, decrypt = aead.encrypt, aead.decrypt

    def op() -> None:
        try:
            n = take()
        except IndexError:
            n = refill()
        decrypt(n, encrypt(n, PAYLOAD, AAD), AAD)

    return op


def tink_op() -> Callable[[], None] | None:
    try:
        import tink
        from tink import aead
    except ImportError:
        return None
    aead.register()
    primitive = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)

    def op() -> None:
        primitive.decrypt(primitive.encrypt(PAYLOAD, AAD), AAD)

    return op


def aws_op() -> Callable[[], None] | None:
    try:
        import aws_encryption_sdk
        from aws_encryption_sdk.identifiers import (
            CommitmentPolicy,
            EncryptionKeyType,
            WrappingAlgorithm,
        )
        from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
        from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider
    except ImportError:
        return None
    secret = os.urandom(32)

    class Provider(RawMasterKeyProvider):  # type: ignore[misc]
        provider_id = "bench"

        def _get_raw_key(self, key_id: bytes) -> WrappingKey:
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=secret, wrapping_key_type=EncryptionKeyType.SYMMETRIC)

    provider = Provider()
    provider.add_master_key(b"bench-key")
    cache = aws_encryption_sdk.LocalCryptoMaterialsCache(capacity=100)
    cmm = aws_encryption_sdk.CachingCryptoMaterialsManager(
        master_key_provider=provider, cache=cache, max_age=600.0, max_messages_encrypted=10**9)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    context = {"aad": AAD.decode()}

    def op() -> None:
        blob, _ = client.encrypt(source=PAYLOAD, materials_manager=cmm,
                                 encryption_context=context)
        client.decrypt(source=blob, materials_manager=cmm)

    return op


def sealer_op(provider: KeyProvider, user_id: str) -> Callable[[], None]:
    """``Sealer.seal_into`` then ``Sealer.open_from``, 200 per event-loop turn.

    Wired as the gateway wires it (aggregator/custody.py): the envelope counts seals in
    the :class:`SealLedger`, which ``seal_into`` checks before every seal. The ledger is
    seeded with one block large enough for the run, so its engine never connects; the
    ORM attribute set of ``seal_into`` is part of the path.
    """
    ledger = SealLedger(create_async_engine("sqlite+aiosqlite://"), block=2**40,
                        low_water=1024)
    env = Envelope(provider, seal_counter=ledger)
    key = env.new_data_key(f"dek_{user_id}")
    ledger.seed(key.dek_id, 2**40)
    sealer = Sealer("eu", env, ledger)
    txn = Transaction(id="txn_eu_0123456789abcdefghijklmnop", user_id=user_id)
    loop = asyncio.new_event_loop()

    async def batch() -> None:
        for _ in range(200):
            await sealer.seal_into(key, txn, "description_sealed", PAYLOAD)
            if await sealer.open_from(key, txn, "description_sealed") is None:
                raise AssertionError("the sealed value did not open")

    def op() -> None:
        loop.run_until_complete(batch())

    return op


def zipf_sampler(users: int, s: float, rng: random.Random) -> Callable[[], int]:
    """Draws user ranks with P(k) ∝ 1/k^s via an inverse CDF over rank buckets."""
    edges = sorted({int(1.05 ** i) for i in range(400) if 1.05 ** i <= users} | {users})
    weights = [sum(1 / k ** s for k in range(a, b)) if b - a < 64 else
               ((a ** (1 - s)) - (b ** (1 - s))) / (s - 1) for a, b in itertools.pairwise(edges)]
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]

    def draw() -> int:
        i = bisect.bisect(cumulative, rng.random() * total)
        i = min(i, len(edges) - 2)
        return rng.randrange(edges[i], edges[i + 1])

    return draw


def provider_calls(provider: KeyProvider, users: int, opens: int, hours: float
                   ) -> tuple[int, int, int]:
    """(our unwraps, an unbounded cache's unwraps, distinct users) over the simulated run."""
    clock = [0.0]
    counting = CountingProvider(provider)
    writer = Envelope(provider)
    reader = Envelope(counting, cache_size=CACHE_SIZE, cache_ttl=CACHE_TTL,  # type: ignore[arg-type]
                      clock=lambda: clock[0])
    rng = random.Random(7)
    draw = zipf_sampler(users, 1.1, rng)
    keys: dict[int, tuple[WrappedKey, bytes]] = {}
    ideal: dict[int, float] = {}
    ideal_calls = 0
    step = hours * 3600 / opens
    for _ in range(opens):
        clock[0] += step
        user = draw()
        if user not in keys:
            wrapped = writer.new_data_key(f"dek_usr_eu_{user:07d}")
            keys[user] = (wrapped, writer.seal(wrapped, PAYLOAD, AAD))
        wrapped, blob = keys[user]
        reader.open(wrapped, blob, AAD)
        if ideal.get(user, -1.0) <= clock[0]:
            ideal_calls += 1
            ideal[user] = clock[0] + CACHE_TTL
    return counting.unwraps, ideal_calls, len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=50_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--opens", type=int, default=300_000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="5 rounds of 10k, 60k opens")
    args = parser.parse_args()
    if args.quick:
        args.ops, args.rounds, args.opens = 10_000, 5, 60_000
    load_before = _load()

    with tempfile.TemporaryDirectory() as tmp:
        provider = open_provider(LocalKeyringConfig(directory=Path(tmp) / "keys", kek_id="eu"))
        provider.ensure_kek()
        env = Envelope(provider)
        key = env.new_data_key("dek_usr_eu_bench")

        def envelope() -> None:
            env.open(key, env.seal(key, PAYLOAD, AAD), AAD)

        sides: dict[str, tuple[Callable[[], None], int]] = {
            "pooled primitive": (pooled_primitive(), args.ops),
            "envelope": (envelope, args.ops),
            "sealer": (sealer_op(provider, "usr_eu_0123456789"), args.ops // 200),
        }
        for name, make in (("tink", tink_op), ("aws sdk", aws_op)):
            op = make()
            if op is None:
                print(f"{name}: not installed (pip install -e '.[bench]'); skipped")
            else:
                sides[name] = (op, args.ops if name == "tink" else max(200, args.ops // 100))
        walls: dict[str, list[float]] = {name: [] for name in sides}
        cpus: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                fn, n = sides[name]
                per = 200 if name == "sealer" else 1
                wall, cpu = rate(fn, n)
                walls[name].append(wall * per)
                cpus[name].append(cpu * per)
        med = {name: statistics.median(v) for name, v in walls.items()}
        cpu_med = {name: statistics.median(v) for name, v in cpus.items()}
        for name, value in med.items():
            print(f"{name:<17} seal+open 64 B: {value:>11,.0f} ops/s wall, "
                  f"{cpu_med[name]:>11,.0f} ops/s CPU (median of {args.rounds})")
        limit = med["pooled primitive"]
        ours = med["envelope"]
        calls, ideal, distinct = provider_calls(provider, args.users, args.opens, args.hours)

    per_10k = calls * 10_000 / args.opens
    cpu_ratio = {name: value / cpu_med["pooled primitive"] for name, value in cpu_med.items()}
    print(f"envelope / pooled primitive: {ours / limit:.2f} wall, {cpu_ratio['envelope']:.2f} CPU "
          f"(target >= 0.7); Sealer path / pooled primitive: {med['sealer'] / limit:.2f} wall, "
          f"{cpu_ratio['sealer']:.2f} CPU (target >= 0.5)")
    tink = med.get("tink")
    aws = med.get("aws sdk")
    if tink:
        print(f"envelope / Tink AEAD: {ours / tink:.2f} wall, "
              f"{cpu_med['envelope'] / cpu_med['tink']:.2f} CPU (target >= 1.0)")
    if aws:
        print(f"AWS Encryption SDK (raw key, cached data key) is {ours / aws:.0f}x slower")
    print(f"{args.opens:,} opens by {distinct:,} distinct users of {args.users:,} (Zipf s=1.1) "
          f"over {args.hours:g} h, cache {CACHE_SIZE:,} keys / TTL {CACHE_TTL:.0f} s: "
          f"{calls:,} provider calls; an unbounded cache with the same TTL: {ideal:,}")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {_load()}")
    nan = float("nan")
    print(f"RESULT envelope_vs_pooled_primitive={ours / limit:.2f} "
          f"sealer_vs_pooled_primitive={med['sealer'] / limit:.2f} "
          f"envelope_vs_pooled_primitive_cpu={cpu_ratio['envelope']:.2f} "
          f"sealer_vs_pooled_primitive_cpu={cpu_ratio['sealer']:.2f} "
          f"envelope_vs_tink={(ours / tink) if tink else nan:.2f} "
          f"aws_sdk_slower_by={(ours / aws) if aws else nan:.0f} "
          f"provider_calls_per_10k_opens={per_10k:.0f} "
          f"provider_calls_vs_unbounded={ideal / calls:.2f}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())

if __name__ == "__main__":
    main()
