"""Bank profiles: one TOML file per bank, validated completely at start-up.

A profile is data (issuer, scopes, client registration, API dialect, display data); a
bank's deviations from the specifications are named hooks (:mod:`connectors.hooks`).
Secrets never live in a profile: it names where they are (``client_secret_env``,
``private_key_pem_env``, ``private_key_file``). The exceptions are for loopback issuers
only: ``client_secret_dev_default``, the sandbox bank's published development secret, and
``dev_private_key``, the name of a development signing key that the application generates
on first use in its own data directory (no private key ships in the package; the gateway
resolves it, ``aggregator/sandbox_keys.py``). Every problem is a
:class:`~connectors.errors.ProfileError` naming the file, the key and what is wrong, so
an operator fixes a typo before the first user is sent to a bank.

A bank that requires a transport certificate (UK Open Banking, FAPI; RFC 8705) names it
with ``tls_client_cert_file`` and ``tls_client_key_file`` (the key file mode 0600), and
``tls_ca_file`` when its server certificate chains to a private root; the certificate
is presented on every call to that bank. ``client_auth_method = "tls_client_auth"`` (or
``"self_signed_tls_client_auth"``) makes the certificate the client's only credential.

A FAPI 2.0 bank (Security Profile §5.3.2.2) sender-constrains its tokens:
``sender_constraint = "dpop"`` binds them to a per-connection key (RFC 9449),
``"mtls"`` to the transport certificate (RFC 8705 §3; needs ``tls_client_cert_file``);
``"none"`` (the default) accepts bearer tokens.

A minimal profile::

    id = "examplebank-de"
    display_name = "Example Bank"
    country = "DE"
    region = "eu"
    issuer = "https://auth.examplebank.de"
    scopes = ["openid", "offline_access", "accounts"]
    client_id = "our-client-id"
    client_auth_method = "private_key_jwt"
    private_key_file = "/etc/aggregator/keys/examplebank.pem"
    hooks = ["prompt_consent_for_offline_access"]

    [api]
    dialect = "berlin_group"
    base_url = "https://api.examplebank.de/v1"

    [sync]               # optional; these are the defaults
    interval_hours = 6   # a scheduled (unattended) sync at most this often
    daily_budget = 4     # unattended calls per rolling 24 h, per account and data type
    reserve = 1          # of those, kept back from scheduled syncs for on-demand/webhooks

    [consent]            # optional
    max_days = 180       # default: 90 for GB, 180 for EEA countries, else none
    expiry_field = "consent_expires_at"   # a token response field naming the expiry
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from connectors import _schema
from connectors._schema import Table, is_loopback_url
from connectors.consents.base import Standard
from connectors.consents.berlin_options import BerlinGroupOptions
from connectors.consents.options import ObieOptions, standard_options
from connectors.errors import ProfileError
from connectors.hooks import Hook

__all__ = [
    "BUILTIN_PROFILES_DIR",
    "ApiConfig",
    "BankProfile",
    "ClientAuthMethod",
    "ConsentPolicy",
    "Endpoints",
    "ParMode",
    "SenderConstraint",
    "SyncPolicy",
    "load_profiles",
]

#: The profiles shipped with the package (the sandbox banks).
BUILTIN_PROFILES_DIR = Path(__file__).parent / "banks"


class ClientAuthMethod(enum.StrEnum):
    """How the client proves its identity at the token, PAR and revocation endpoints."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - RFC 6749 §2.3.1, HTTP Basic
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - RFC 6749 §2.3.1, form body
    PRIVATE_KEY_JWT = "private_key_jwt"  # RFC 7523 §2.2, a signed JWT assertion
    TLS_CLIENT_AUTH = "tls_client_auth"  # RFC 8705 §2.1, a CA-issued client certificate
    SELF_SIGNED_TLS_CLIENT_AUTH = "self_signed_tls_client_auth"  # RFC 8705 §2.2, registered cert

    @property
    def uses_secret(self) -> bool:
        return self in (ClientAuthMethod.CLIENT_SECRET_BASIC, ClientAuthMethod.CLIENT_SECRET_POST)

    @property
    def uses_certificate(self) -> bool:
        """The TLS client certificate is the credential (RFC 8705 §2)."""
        return self in (
            ClientAuthMethod.TLS_CLIENT_AUTH, ClientAuthMethod.SELF_SIGNED_TLS_CLIENT_AUTH
        )


class ParMode(enum.StrEnum):
    """When to push the authorization request (RFC 9126) instead of sending it in the URL."""

    ALWAYS = "always"  # `use_par = true`: fail at discovery if the bank has no PAR endpoint
    NEVER = "never"  # `use_par = false`: unless the bank requires PAR, then it is an error
    AUTO = "auto"  # `use_par = "auto"`: whenever the bank advertises a PAR endpoint


class SenderConstraint(enum.StrEnum):
    """How the bank binds access tokens to the client (FAPI 2.0 Security Profile §5.3.2.2)."""

    DPOP = "dpop"  # RFC 9449: a proof JWT per request, signed with the connection's key
    MTLS = "mtls"  # RFC 8705 §3: tokens bound to the transport certificate
    NONE = "none"  # bearer tokens (RFC 6750): whoever holds one may use it


@dataclass(frozen=True)
class Endpoints:
    """Endpoints set in the profile; each one overrides the discovered value."""

    authorization: str | None = None
    token: str | None = None
    par: str | None = None
    revocation: str | None = None


#: The per-account resources a sync can read besides the (required) account list.
ACCOUNT_RESOURCES: tuple[str, ...] = ("balances", "transactions")


@dataclass(frozen=True)
class ApiConfig:
    """Where the bank's account API lives, which dialect it speaks, what it offers.

    ``resources`` (``api.resources`` in the file, default all of
    :data:`ACCOUNT_RESOURCES`) lists the per-account resources the bank offers; a sync
    does not ask for the others and reports them ``not_offered``. The account list is
    always read: without it there is nothing to sync.
    """

    dialect: str
    base_url: str
    resources: tuple[str, ...] = ACCOUNT_RESOURCES


@dataclass(frozen=True)
class SyncPolicy:
    """How often the worker syncs a connection unattended, and how many calls a bank allows.

    ``daily_budget`` is per connection, account and data type (accounts, transactions)
    in any rolling 24 hours: PSD2 RTS Art. 36(5)(b) allows four account-information
    requests a day without the user present, and aggregators such as GoCardless enforce
    four per day, account and data type. ``interval_hours`` spaces the scheduled syncs;
    on-demand and webhook-triggered syncs spend the same budget, and only they may spend
    the last ``reserve`` units of it.
    """

    interval_hours: int = 6
    daily_budget: int = 4
    #: Units per window only on-demand and webhook-triggered syncs may spend: a webhook
    #: after a day of scheduled syncs is still served (the sync that matters).
    reserve: int = 1


@dataclass(frozen=True)
class RefreshPolicy:
    """How soon after a refresh the next may come: the floor under the refresh cadence.

    A token is refreshed ahead of expiry by a fraction of its lifetime, but never sooner
    than ``min_lifetime_percent`` of that lifetime after the last refresh, nor sooner
    than ``min_interval_seconds``: a bank issuing 15-second access tokens is not asked
    for one every few seconds. A sync that finds the access token expired refreshes on
    demand, under the same lease (``[refresh]`` in the profile file).
    """

    min_interval_seconds: int = 60
    min_lifetime_percent: int = 50


#: Countries of the European Economic Area (EU 27, Iceland, Liechtenstein, Norway).
EEA: frozenset[str] = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    "IS", "LI", "NO",
})


def default_consent_days(country: str) -> int | None:
    """How long a consent lasts where the bank says nothing, by the bank's country.

    EEA: 180 days (PSD2 RTS, Delegated Regulation (EU) 2018/389 Art. 10a as amended by
    (EU) 2022/2360: the customer re-confirms every 180 days); UK: 90 days (FCA SCA-RTS
    Art. 10A, the AISP's 90-day re-confirmation). Elsewhere no period is assumed.
    """
    if country == "GB":
        return 90
    return 180 if country in EEA else None


@dataclass(frozen=True)
class ConsentPolicy:
    """How long the user's consent at the bank lasts once granted (or renewed).

    ``expiry_field`` names a token response field carrying the consent's end (an RFC
    3339 instant, or seconds from now); when the bank sends it, it wins over
    ``max_days``. With neither, the connection has no known expiry.
    """

    max_days: int | None = None
    expiry_field: str | None = None

    def expires_at(self, granted_at: datetime, answered: datetime | None = None
                   ) -> datetime | None:
        """The consent's end: the bank's answer, else ``max_days`` after ``granted_at``."""
        if answered is not None:
            return answered
        if self.max_days is None:
            return None
        return granted_at + timedelta(days=self.max_days)


@dataclass(frozen=True, kw_only=True)
class BankProfile:
    """One bank, as its profile file describes it; built only by :func:`load_profiles`."""

    id: str
    display_name: str
    country: str
    region: str
    issuer: str
    scopes: tuple[str, ...]
    client_id: str
    client_auth_method: ClientAuthMethod
    api: ApiConfig
    source: Path
    discovery: bool = True
    endpoints: Endpoints = field(default_factory=Endpoints)
    client_secret_env: str | None = None
    #: Only for loopback development banks: used when `client_secret_env` is unset.
    client_secret_dev_default: str | None = field(default=None, repr=False)
    private_key_pem_env: str | None = None
    private_key_file: Path | None = None
    #: Only for loopback development banks: the name of a generated development key,
    #: resolved into `private_key_file` by the application before credentials are read.
    dev_private_key: str | None = None
    signing_alg: str | None = None
    client_key_id: str | None = None
    use_par: ParMode = ParMode.AUTO
    allow_plain_pkce: bool = False
    extra_authorize_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    hooks: tuple[Hook, ...] = ()
    logo: str | None = None
    sync: SyncPolicy = field(default_factory=SyncPolicy)
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)
    #: RFC 8705 transport certificate presented on every call to the bank, and its key.
    tls_client_cert_file: Path | None = None
    tls_client_key_file: Path | None = None
    #: The roots the bank's server certificate chains to, when not a public CA's.
    tls_ca_file: Path | None = None
    #: The consent standard (connectors/consents): a resource created before the redirect.
    standard: Standard = Standard.OAUTH2
    #: ``[obie]``: UK Open Banking consent settings, set when ``standard = "obie"``.
    obie: ObieOptions | None = None
    #: ``[berlin_group]``: NextGenPSD2 consent settings, set when ``standard = "berlin_group"``.
    berlin_group: BerlinGroupOptions | None = None
    #: How tokens are sender-constrained; DPoP keys are made per connection at link.
    sender_constraint: SenderConstraint = SenderConstraint.NONE

    @property
    def mutual_tls(self) -> bool:
        """Whether calls present a client certificate (and use RFC 8705 §5 aliases)."""
        return self.tls_client_cert_file is not None

    @property
    def scope(self) -> str:
        """The `scope` request parameter (RFC 6749 §3.3: space-delimited)."""
        return " ".join(self.scopes)


_RESERVED_AUTHORIZE_PARAMS = frozenset(
    {
        "client_id",
        "response_type",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "request_uri",
        "request",
    }
)


_TOP_KEYS = frozenset(
    {
        "id",
        "display_name",
        "country",
        "region",
        "issuer",
        "discovery",
        "endpoints",
        "scopes",
        "client_id",
        "client_auth_method",
        "client_secret_env",
        "client_secret_dev_default",
        "private_key_pem_env",
        "private_key_file",
        "dev_private_key",
        "signing_alg",
        "client_key_id",
        "use_par",
        "allow_plain_pkce",
        "extra_authorize_params",
        "hooks",
        "api",
        "logo",
        "sync",
        "refresh",
        "consent",
        "tls_client_cert_file",
        "tls_client_key_file",
        "tls_ca_file",
        "standard",
        *(s.value for s in Standard),
        "sender_constraint",
    }
)


def load_profiles(
    dirs: Sequence[Path],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    include_builtin: bool = True,
) -> dict[str, BankProfile]:
    """Read every ``*.toml`` in the built-in directory and in `dirs`, keyed by bank id.

    `overrides` maps a bank id to replacement values, applied before validation, e.g.
    ``{"sandbox-eu": {"issuer": "http://127.0.0.1:9001"}}``; nested tables merge, and a
    dotted key (``"api.dialect"``) addresses a nested value. An override naming an
    unknown bank is an error too.
    """
    overrides = overrides or {}
    search = [BUILTIN_PROFILES_DIR, *dirs] if include_builtin else list(dirs)
    profiles: dict[str, BankProfile] = {}
    seen: set[str] = set()
    for directory in search:
        if not directory.is_dir():
            raise ProfileError(str(directory), "(directory)", "not a readable directory")
        for path in sorted(directory.glob("*.toml")):
            profile = _load_file(path, overrides)
            if profile.id in profiles:
                other = profiles[profile.id].source
                raise ProfileError(
                    str(path), "id", f"duplicate bank id {profile.id!r}, also in {other}"
                )
            profiles[profile.id] = profile
            seen.add(profile.id)
    for bank_id in overrides:
        if bank_id not in seen:
            raise ProfileError("(overrides)", bank_id, "no bank profile has this id")
    return dict(sorted(profiles.items()))


def _load_file(path: Path, overrides: Mapping[str, Mapping[str, Any]]) -> BankProfile:
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ProfileError(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), "(syntax)", str(exc)) from None
    except UnicodeDecodeError as exc:  # TOML v1.0.0: a document is UTF-8 text
        raise ProfileError(str(path), "(file)", f"not UTF-8 text (byte {exc.start})") from None
    bank_id = data.get("id")
    overridden: frozenset[str] = frozenset()
    if isinstance(bank_id, str) and bank_id in overrides:
        data, overridden = _schema.merge(data, overrides[bank_id])
    return _parse(Table(data, _TOP_KEYS, file=str(path), overridden=overridden), path)


def _parse(t: Table, path: Path) -> BankProfile:
    issuer = t.url("issuer", issuer=True)
    loopback = is_loopback_url(issuer)
    method = ClientAuthMethod(t.choice("client_auth_method", [m.value for m in ClientAuthMethod]))
    use_par = t.get("use_par", default="auto")
    if use_par not in (True, False, "auto"):
        raise t.error("use_par", 'must be true, false or "auto"')
    par_mode = {True: ParMode.ALWAYS, False: ParMode.NEVER}.get(use_par, ParMode.AUTO)
    discovery = t.boolean("discovery", default=True)
    standard = Standard(t.choice("standard", [s.value for s in Standard])
                        ) if "standard" in t.names() else Standard.OAUTH2
    api = _api(t.table("api", {"dialect", "base_url", "resources"}, required=True), issuer)
    endpoints = _endpoints(
        t.table("endpoints", {"authorization", "token", "par", "revocation"}),
        discovery=discovery,
        par=par_mode,
    )
    return BankProfile(
        id=t.string("id", pattern=_schema.BANK_ID),
        display_name=t.string("display_name", max_length=100),
        country=t.string("country", pattern=_schema.COUNTRY),
        region=t.string("region", pattern=_schema.REGION),
        issuer=issuer,
        discovery=discovery,
        endpoints=endpoints,
        scopes=t.scopes("scopes"),
        client_id=t.string("client_id", pattern=_schema.CLIENT_ID),
        client_auth_method=method,
        use_par=par_mode,
        allow_plain_pkce=t.boolean("allow_plain_pkce", default=False),
        extra_authorize_params=MappingProxyType(_authorize_params(t)),
        hooks=t.hooks("hooks"),
        api=api,
        standard=standard,
        **standard_options(t, standard, api.base_url, base=path.parent),
        logo=t.logo("logo", base=path.parent),
        sync=_sync(t.table("sync", {"interval_hours", "daily_budget", "reserve"})),
        refresh=_refresh(t.table("refresh", {"min_interval_seconds", "min_lifetime_percent"})),
        consent=_consent(t.table("consent", {"max_days", "expiry_field"}),
                         default_consent_days(t.string("country", pattern=_schema.COUNTRY))),
        source=path,
        **_credentials(t, method, loopback=loopback, base=path.parent,
                       signs_requests=standard is Standard.OBIE),
        **_transport_certificate(t, method, base=path.parent),
        sender_constraint=_sender_constraint(t),
    )


def _sender_constraint(t: Table) -> SenderConstraint:
    options = [c.value for c in SenderConstraint]
    value = SenderConstraint(t.optional_choice("sender_constraint", options) or "none")
    if value is SenderConstraint.MTLS and "tls_client_cert_file" not in t.names():
        raise t.error("sender_constraint", '"mtls" binds tokens to the transport certificate '
                      "(RFC 8705 §3): set tls_client_cert_file and tls_client_key_file")
    return value


def _endpoints(t: Table, *, discovery: bool, par: ParMode) -> Endpoints:
    return Endpoints(
        authorization=t.optional_url("authorization", required=not discovery),
        token=t.optional_url("token", required=not discovery),
        par=t.optional_url("par", required=not discovery and par is ParMode.ALWAYS),
        revocation=t.optional_url("revocation"),
    )


def _api(t: Table, issuer: str) -> ApiConfig:
    resources = t.get("resources", default=list(ACCOUNT_RESOURCES))
    if not isinstance(resources, list) or not all(
            isinstance(r, str) and r in ACCOUNT_RESOURCES for r in resources):
        raise t.error("resources", f"must be an array of {', '.join(ACCOUNT_RESOURCES)}")
    if len(set(resources)) != len(resources):
        raise t.error("resources", "lists a resource twice")
    return ApiConfig(dialect=t.dialect("dialect"), base_url=t.url("base_url", base=issuer),
                     resources=tuple(resources))


def _sync(t: Table) -> SyncPolicy:
    default = SyncPolicy()
    budget = t.integer("daily_budget", default=default.daily_budget, minimum=1, maximum=96)
    return SyncPolicy(
        interval_hours=t.integer("interval_hours", default=default.interval_hours,
                                 minimum=1, maximum=24 * 7),
        daily_budget=budget,
        # A budget of one leaves nothing to keep back by default; set explicitly, the
        # reserve must leave scheduled syncs at least one unit.
        reserve=t.integer("reserve", default=min(default.reserve, budget - 1),
                          minimum=0, maximum=budget - 1),
    )


def _refresh(t: Table) -> RefreshPolicy:
    default = RefreshPolicy()
    return RefreshPolicy(
        min_interval_seconds=t.integer("min_interval_seconds",
                                       default=default.min_interval_seconds,
                                       minimum=1, maximum=24 * 3600),
        min_lifetime_percent=t.integer("min_lifetime_percent",
                                       default=default.min_lifetime_percent,
                                       minimum=0, maximum=90),
    )


def _consent(t: Table, default_days: int | None) -> ConsentPolicy:
    days = default_days
    if "max_days" in t.names():
        days = t.integer("max_days", default=1, minimum=1, maximum=730)
    field_name = t.optional_string("expiry_field", pattern=_FIELD_NAME)
    return ConsentPolicy(max_days=days, expiry_field=field_name)


_DEV_KEY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def _authorize_params(t: Table) -> dict[str, str]:
    params = t.table("extra_authorize_params", None)
    out: dict[str, str] = {}
    for name in params.names():
        if name in _RESERVED_AUTHORIZE_PARAMS:
            raise params.error(name, "set by the OAuth client itself; remove it here")
        out[name] = params.string(name, max_length=2000)
    return out


def _credentials(
    t: Table, method: ClientAuthMethod, *, loopback: bool, base: Path,
    signs_requests: bool = False,
) -> dict[str, Any]:
    """The client's credential; ``signs_requests``: a signing key even with mTLS, since
    UK Open Banking signs every request object (OBIE Security Profile §5.2.2, RFC 9101)."""
    secret_env = t.env_name("client_secret_env")
    dev_default = t.optional_string("client_secret_dev_default")
    pem_env = t.env_name("private_key_pem_env")
    key_file = t.path("private_key_file", base=base)
    dev_key = t.optional_string("dev_private_key", pattern=_DEV_KEY_NAME)
    alg = t.optional_choice("signing_alg", ["PS256", "ES256"])
    kid = t.optional_string("client_key_id")
    if key_file is not None and key_file.parent == BUILTIN_PROFILES_DIR and not loopback:
        # Anything inside the package is published with it: never a real bank's key.
        raise t.error("private_key_file", "a key inside the package is public; "
                      "use your own key (private_key_pem_env or a file of yours)")
    if dev_key is not None and not loopback:
        # A generated development key is for the loopback sandbox banks only.
        raise t.error("dev_private_key", "a generated development key is allowed only for "
                      "a loopback development bank; use private_key_pem_env or "
                      "private_key_file")
    if dev_key is not None:
        if key_file is not None or pem_env is not None:
            raise t.error("dev_private_key", "name one key: dev_private_key, "
                          "private_key_pem_env or private_key_file")
        if alg is None:
            raise t.error("signing_alg", "dev_private_key needs signing_alg (the key type "
                          "generated follows it)")
    if dev_default is not None and not loopback:
        raise t.error(
            "client_secret_dev_default",
            "a literal secret is allowed only for a loopback development bank; "
            "use client_secret_env",
        )
    if method.uses_secret and signs_requests:
        raise t.error("client_auth_method", "UK Open Banking clients authenticate with "
                      "private_key_jwt or tls_client_auth (OBIE Security Profile §5.2.3)")
    if method.uses_secret:
        if secret_env is None and dev_default is None:
            raise t.error("client_secret_env", f"required by {method.value}")
        for key, value in (
            ("private_key_pem_env", pem_env),
            ("private_key_file", key_file),
            ("dev_private_key", dev_key),
            ("signing_alg", alg),
        ):
            if value is not None:
                raise t.error(key, f"only used with private_key_jwt, not {method.value}")
    elif method is ClientAuthMethod.PRIVATE_KEY_JWT:
        if (pem_env is None) == (key_file is None) and dev_key is None:
            raise t.error(
                "private_key_pem_env",
                "private_key_jwt needs exactly one of private_key_pem_env and private_key_file",
            )
        if secret_env is not None or dev_default is not None:
            raise t.error("client_secret_env", "not used with private_key_jwt")
    else:
        keys: tuple[tuple[str, str | Path | None], ...] = (
            ("client_secret_env", secret_env),
            ("client_secret_dev_default", dev_default),
        )
        if signs_requests:
            if (pem_env is None) == (key_file is None) and dev_key is None:
                raise t.error("private_key_pem_env", "signed request objects need exactly "
                              "one of private_key_pem_env and private_key_file")
        else:
            keys += (("private_key_pem_env", pem_env), ("private_key_file", key_file),
                     ("dev_private_key", dev_key), ("signing_alg", alg))
        for key, value in keys:
            if value is not None:
                raise t.error(key, f"not used with {method.value}: the certificate is the "
                                   "credential (RFC 8705 §2)")
    return {
        "client_secret_env": secret_env,
        "client_secret_dev_default": dev_default,
        "private_key_pem_env": pem_env,
        "private_key_file": key_file,
        "dev_private_key": dev_key,
        "signing_alg": alg,
        "client_key_id": kid,
    }


def _transport_certificate(t: Table, method: ClientAuthMethod, *, base: Path) -> dict[str, Any]:
    cert = t.path("tls_client_cert_file", base=base)
    key = t.path("tls_client_key_file", base=base)
    if (cert is None) != (key is None):
        raise t.error("tls_client_cert_file" if cert is None else "tls_client_key_file",
                      "a client certificate needs both tls_client_cert_file and "
                      "tls_client_key_file")
    if method.uses_certificate and cert is None:
        raise t.error("tls_client_cert_file", f"required by {method.value} (RFC 8705 §2)")
    return {
        "tls_client_cert_file": cert,
        "tls_client_key_file": key,
        "tls_ca_file": t.path("tls_ca_file", base=base),
    }
