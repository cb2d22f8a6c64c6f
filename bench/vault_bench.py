"""Envelope seal+open against raw AES-GCM, and provider calls per 10k opens.

Our path: ``Envelope.seal`` then ``Envelope.open`` of a 64-byte token under a cached data
key (header, key commitment, AAD fingerprint, seal accounting). The limit: the same
payload through a reused ``AESGCM`` object, encrypt+decrypt with a fresh random nonce,
measured in the same run, interleaved, so a noisy machine moves both alike.

Second figure: 100 users' tokens opened 10,000 times in random order through a fresh
envelope; every call that reaches the key provider is counted.

Prints ``RESULT vault_seal_open_ratio=… provider_calls_per_10k_opens=…``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault import Envelope, KeyProvider, LocalKeyringConfig, WrappedKey, open_provider

PAYLOAD = b"rt_" + b"x" * 61  # a 64-byte refresh token
AAD = b"credentials|refresh_token|crd_eu_0123456789|usr_eu_0123456789|eu"


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


def rate(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=50_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        provider = open_provider(LocalKeyringConfig(directory=Path(tmp) / "keys", kek_id="eu"))
        provider.ensure_kek()
        env = Envelope(provider)
        key = env.new_data_key("dek_usr_eu_bench")

        aead = AESGCM(AESGCM.generate_key(bit_length=256))

        def raw() -> None:
            nonce = os.urandom(12)
            aead.decrypt(nonce, aead.encrypt(nonce, PAYLOAD, AAD), AAD)

        fixed = os.urandom(12)

        def raw_fixed_nonce() -> None:  # the bare primitive; unsafe to use this way
            aead.decrypt(fixed, aead.encrypt(fixed, PAYLOAD, AAD), AAD)

        def ours() -> None:
            env.open(key, env.seal(key, PAYLOAD, AAD), AAD)

        raw_rates, bare_rates, our_rates = [], [], []
        for _ in range(args.rounds):
            raw_rates.append(rate(raw, args.ops))
            bare_rates.append(rate(raw_fixed_nonce, args.ops))
            our_rates.append(rate(ours, args.ops))
        raw_med, our_med = statistics.median(raw_rates), statistics.median(our_rates)
        bare_med = statistics.median(bare_rates)
        ratio = our_med / raw_med

        writer = Envelope(provider)
        users = [writer.new_data_key(f"dek_usr_eu_{i:03d}") for i in range(100)]
        blobs = [writer.seal(k, PAYLOAD, k.dek_id.encode()) for k in users]
        counting = CountingProvider(provider)
        reader = Envelope(counting)  # type: ignore[arg-type]
        rng = random.Random(7)
        for _ in range(10_000):
            i = rng.randrange(100)
            reader.open(users[i], blobs[i], users[i].dek_id.encode())

    print(f"raw AESGCM encrypt+decrypt (64 B, fresh nonce): {raw_med:,.0f} ops/s (median)")
    print(f"Envelope seal+open (64 B, cached data key):      {our_med:,.0f} ops/s (median)")
    print(f"bare AESGCM, one fixed nonce (not a safe use):   {bare_med:,.0f} ops/s (median)")
    print(f"ratio to raw: {ratio:.3f}   (target >= 0.5); to the bare primitive: "
          f"{our_med / bare_med:.3f}")
    print(f"provider unwraps for 10,000 opens of 100 users' tokens: {counting.unwraps} "
          "(target <= 100)")
    print(f"RESULT vault_seal_open_ratio={ratio:.3f} "
          f"provider_calls_per_10k_opens={counting.unwraps} "
          f"ratio_to_bare_primitive={our_med / bare_med:.3f} "
          f"seal_open_ops_per_s={our_med:.0f} raw_ops_per_s={raw_med:.0f}")


if __name__ == "__main__":
    main()
