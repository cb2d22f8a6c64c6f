// An independent, OpenID-certified authorization server (panva/oidc-provider) for the
// interoperability tests in tests/interop/. Started and stopped by tests/interop/conftest.py.
//
// Usage:
//   OIDC_CLIENTS='[{"client_id": "...", ...}]' node server.mjs [--port N] [--require-par]
//
// Options (each argv flag has an environment twin; argv wins):
//   --port N          / OIDC_PORT          TCP port on 127.0.0.1; 0 (default) lets the kernel pick
//   --clients-file F  / OIDC_CLIENTS       client metadata (RFC 7591 names), a JSON array; the env
//                                           variable holds the JSON itself, the flag a file path
//   --require-par     / OIDC_REQUIRE_PAR=1 RFC 9126 §5: reject authorization requests not pushed
//   --code-ttl S      / OIDC_CODE_TTL      authorization code lifetime in seconds (default 30)
//   --fapi2           / OIDC_FAPI2=1       the FAPI 2.0 Security Profile (oidc-provider's '2.0'
//                                           profile): PAR required, private_key_jwt only, DPoP
//                                           (RFC 9449) with server nonces on every endpoint
//
// Once listening it prints one line to stdout:
//   OIDC-PROVIDER-READY {"issuer": "http://127.0.0.1:PORT", "version": "9.x.y", ...}
// and it exits when stdin reaches end of file, so a killed test run leaves no server behind.
//
// The server never contacts another host: clients carry their keys inline (`jwks`), and the
// provider's outbound requests (jwks_uri, sector_identifier_uri, request_uri) are refused
// unless they go to loopback. Its HTML pages reference a web font, which only a browser loads.
//
// Written for oidc-provider 8.x (runs on Node.js 18 and 20). Moving to 9.x needs Node.js 22
// and two renames here: `httpOptions` became `fetch(url, options)`, `pkce.methods` is gone.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

function readOptions() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'clients-file': { type: 'string' },
      'require-par': { type: 'boolean' },
      'code-ttl': { type: 'string' },
      fapi2: { type: 'boolean' },
    },
    strict: true,
  });
  const env = process.env;
  const clientsJson = values['clients-file']
    ? readFileSync(values['clients-file'], 'utf8')
    : env.OIDC_CLIENTS;
  if (!clientsJson) {
    throw new Error('no clients: set OIDC_CLIENTS or pass --clients-file');
  }
  return {
    port: Number.parseInt(values.port ?? env.OIDC_PORT ?? '0', 10),
    clients: JSON.parse(clientsJson),
    requirePar: values['require-par'] ?? env.OIDC_REQUIRE_PAR === '1',
    codeTtl: Number.parseInt(values['code-ttl'] ?? env.OIDC_CODE_TTL ?? '30', 10),
    fapi2: values.fapi2 ?? env.OIDC_FAPI2 === '1',
  };
}

// Confidential web clients using the authorization code grant only; a client entry may
// override any of these (RFC 7591 metadata names).
function withClientDefaults(client) {
  return {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...client,
  };
}

// Fresh signing keys per process: RS256 is the OIDC default for ID tokens, ES256 for clients
// that ask for it. Nothing persists, so nothing can leak between test runs.
function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return {
    keys: [
      { ...rsa.export({ format: 'jwk' }), kid: 'rs256', alg: 'RS256', use: 'sig' },
      { ...ec.export({ format: 'jwk' }), kid: 'es256', alg: 'ES256', use: 'sig' },
    ],
  };
}

// Called by oidc-provider before every outbound request; throwing aborts that request.
function loopbackOnlyHttpOptions(url) {
  if (url.protocol !== 'http:' || !LOOPBACK_HOSTS.has(url.hostname)) {
    throw new Error(`refusing outbound request to ${url.href}: the interop server stays on loopback`);
  }
  return { signal: AbortSignal.timeout(2000) };
}

// FAPI 2.0 Security Profile with DPoP: what the gateway's `sender_constraint = "dpop"`
// profiles must interoperate with. Nonces are demanded by the token endpoint and by the
// resource (userinfo) endpoint alike (RFC 9449 §8, §9); proofs are single-use.
function fapi2(configuration) {
  return {
    ...configuration,
    clientAuthMethods: ['private_key_jwt'],
    features: {
      ...configuration.features,
      fapi: { enabled: true, profile: '2.0' },
      dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
    },
  };
}

function configuration(options) {
  const minutes = (n) => n * 60;
  const base = {
    clients: options.clients.map(withClientDefaults),
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    responseTypes: ['code'],
    scopes: ['openid', 'offline_access', 'accounts'],
    // RFC 9700 §2.1.1: PKCE for every client, and only the S256 method (RFC 7636 §4.2).
    pkce: { methods: ['S256'], required: () => true },
    // A client must name its redirect_uri, even when it registered a single one.
    allowOmittingSingleRegisteredRedirectUri: false,
    // Rotate on every use; presenting a used refresh token revokes the whole grant.
    rotateRefreshToken: true,
    features: {
      devInteractions: { enabled: true },
      pushedAuthorizationRequests: {
        enabled: true,
        requirePushedAuthorizationRequests: options.requirePar,
      },
      revocation: { enabled: true },
      introspection: { enabled: true },
      rpInitiatedLogout: { enabled: false },
    },
    ttl: {
      AuthorizationCode: options.codeTtl,
      AccessToken: minutes(5),
      IdToken: minutes(5),
      RefreshToken: minutes(60),
      Interaction: minutes(5),
      Session: minutes(60),
      Grant: minutes(60),
    },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    jwks: signingKeys(),
    async findAccount(_ctx, sub) {
      return { accountId: sub, claims: async () => ({ sub }) };
    },
    httpOptions: loopbackOnlyHttpOptions,
  };
  return options.fapi2 ? fapi2(base) : base;
}

function providerVersion() {
  const require = createRequire(import.meta.url);
  return require('oidc-provider/package.json').version;
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

async function main() {
  const options = readOptions();
  // Bind first, so the issuer carries the real port even when the kernel chose it.
  const server = createServer();
  const port = await listen(server, options.port);
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration(options));
  server.on('request', provider.callback());

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // keep-alive sockets would hold close() open (Node 18)
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.resume();

  const ready = {
    issuer,
    version: providerVersion(),
    node: process.version,
    require_par: options.requirePar || options.fapi2,
    fapi2: options.fapi2,
    clients: options.clients.map((client) => client.client_id),
  };
  process.stdout.write(`OIDC-PROVIDER-READY ${JSON.stringify(ready)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
