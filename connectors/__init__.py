"""Talking to banks: profiles, the OAuth2 client, API dialects and the normalized model.

What other packages may import is listed in ``__all__`` and nowhere else; modules are
private to the package (``tests/connectors/test_exported_members.py`` holds the line).
"""

from connectors.consents import (
    ConsentManager,
    ConsentRequest,
    ConsentState,
    CreatedConsent,
    GrantedConsent,
    Standard,
    UserPresence,
    consent_manager,
)
from connectors.consents.options import ObieOptions
from connectors.consents.readiness import obie_readiness
from connectors.dialects import (
    DEFAULT_MAX_PAGES,
    DIALECTS,
    BerlinGroupDialect,
    Dialect,
    HttpDialect,
    ObieDialect,
    get_dialect,
    parse_retry_after,
)
from connectors.dialects.berlin_errors import AccessExceeded
from connectors.dialects.berlin_signing import request_hooks as bank_request_hooks
from connectors.egress import EgressPolicy, Resolver, check_destination, egress_client
from connectors.errors import (
    AuthorizationExpired,
    BankMisconfigured,
    BankProtocolError,
    BankUnavailable,
    BankUnsupported,
    ConnectorError,
    ConsentInvalid,
    ConsentRejected,
    EgressRefused,
    GrantRevoked,
    IssuerMismatch,
    ItemLoginRequired,
    ProfileError,
    ResourceNotOffered,
    ResourceNotPermitted,
    ResponseTooLarge,
    StateMismatch,
)
from connectors.hooks import Hook, get_hook, hook_names, register_hook
from connectors.logging import RedactingFilter, install_redaction, redact
from connectors.models import Account, AccountType, Balance, Transaction, TransactionStatus
from connectors.oauth.callback import parse_callback
from connectors.oauth.client import BankOAuthClient
from connectors.oauth.compat import Compatibility, Finding, Severity, check_compatibility
from connectors.oauth.credentials import load_client_credentials
from connectors.oauth.fapi2 import fapi2_readiness
from connectors.oauth.pending import PENDING_LIFETIME, PendingAuthorization
from connectors.oauth.rfc7523 import PemSigner, Signer, build_client_assertion
from connectors.oauth.rfc7591 import (
    ClientMetadata,
    ClientRegistration,
    delete_client,
    register_client,
    update_client,
)
from connectors.oauth.rfc8414 import ServerMetadata, fetch_metadata
from connectors.oauth.rfc8705 import bank_ssl_context
from connectors.oauth.rfc9207 import check_issuer
from connectors.oauth.rfc9449 import DPoPAuth, DPoPKey, DPoPNonces
from connectors.oauth.tokens import TokenSet
from connectors.plaid.boundary import MutationDuringPagination, map_plaid_errors
from connectors.plaid.client import (
    LinkToken,
    PlaidConnector,
    PlaidItem,
    RemovedTransaction,
    SyncBatch,
)
from connectors.plaid.config import PlaidConfig, PlaidEnvironment
from connectors.plaid.keys import VerificationKey, WebhookKeys
from connectors.plaid.reasons import RejectReason, WebhookRejected
from connectors.plaid.webhooks import PlaidWebhook, WebhookVerifier
from connectors.profiles import (
    ACCOUNT_RESOURCES,
    BUILTIN_PROFILES_DIR,
    ApiConfig,
    BankProfile,
    ClientAuthMethod,
    ConsentPolicy,
    Endpoints,
    ParMode,
    RefreshPolicy,
    RegistrationPolicy,
    SenderConstraint,
    SyncPolicy,
    load_profiles,
)

__all__ = [
    "ACCOUNT_RESOURCES",
    "BUILTIN_PROFILES_DIR",
    "DEFAULT_MAX_PAGES",
    "DIALECTS",
    "PENDING_LIFETIME",
    "AccessExceeded",
    "Account",
    "AccountType",
    "ApiConfig",
    "AuthorizationExpired",
    "Balance",
    "BankMisconfigured",
    "BankOAuthClient",
    "BankProfile",
    "BankProtocolError",
    "BankUnavailable",
    "BankUnsupported",
    "BerlinGroupDialect",
    "ClientAuthMethod",
    "ClientMetadata",
    "ClientRegistration",
    "Compatibility",
    "ConnectorError",
    "ConsentInvalid",
    "ConsentManager",
    "ConsentPolicy",
    "ConsentRejected",
    "ConsentRequest",
    "ConsentState",
    "CreatedConsent",
    "DPoPAuth",
    "DPoPKey",
    "DPoPNonces",
    "Dialect",
    "EgressPolicy",
    "EgressRefused",
    "Endpoints",
    "Finding",
    "GrantRevoked",
    "GrantedConsent",
    "Hook",
    "HttpDialect",
    "IssuerMismatch",
    "ItemLoginRequired",
    "LinkToken",
    "MutationDuringPagination",
    "ObieDialect",
    "ObieOptions",
    "ParMode",
    "PemSigner",
    "PendingAuthorization",
    "PlaidConfig",
    "PlaidConnector",
    "PlaidEnvironment",
    "PlaidItem",
    "PlaidWebhook",
    "ProfileError",
    "RedactingFilter",
    "RefreshPolicy",
    "RegistrationPolicy",
    "RejectReason",
    "RemovedTransaction",
    "Resolver",
    "ResourceNotOffered",
    "ResourceNotPermitted",
    "ResponseTooLarge",
    "SenderConstraint",
    "ServerMetadata",
    "Severity",
    "Signer",
    "Standard",
    "StateMismatch",
    "SyncBatch",
    "SyncPolicy",
    "TokenSet",
    "Transaction",
    "TransactionStatus",
    "UserPresence",
    "VerificationKey",
    "WebhookKeys",
    "WebhookRejected",
    "WebhookVerifier",
    "bank_request_hooks",
    "bank_ssl_context",
    "build_client_assertion",
    "check_compatibility",
    "check_destination",
    "check_issuer",
    "consent_manager",
    "delete_client",
    "egress_client",
    "fapi2_readiness",
    "fetch_metadata",
    "get_dialect",
    "get_hook",
    "hook_names",
    "install_redaction",
    "load_client_credentials",
    "load_profiles",
    "map_plaid_errors",
    "obie_readiness",
    "parse_callback",
    "parse_retry_after",
    "redact",
    "register_client",
    "register_hook",
    "update_client",
]
