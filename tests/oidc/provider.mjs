// The OpenID provider of palisade's sign-in tests: panva's oidc-provider (OpenID
// Certified), on 127.0.0.1 on a port the OS picks, with signing keys made at start (RSA
// and P-256) and two confidential clients, one whose ID tokens are RS256 and one ES256.
//
// Sign-in uses the provider's development interactions (a login form that takes any
// account name, then a consent form), which the tests fill in without a browser.
// Accounts' claims are set by the tests: PUT /test/accounts/<id> with
// {"roles": [...], "groups": [...], "tenant": "..."}; a role removed there is gone from
// the next ID token.
//
// Prints one line, {"issuer": "..."}, once it listens. Environment:
//   OIDC_REDIRECT_URI   the redirect URI registered for both clients
//   OIDC_CLIENT_SECRET  their client secret
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const redirectUri = process.env.OIDC_REDIRECT_URI;
const clientSecret = process.env.OIDC_CLIENT_SECRET;
if (!redirectUri || !clientSecret) {
  console.error('OIDC_REDIRECT_URI and OIDC_CLIENT_SECRET are required');
  process.exit(2);
}

function signingKey(type, options, kid, alg) {
  const jwk = generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
  return { ...jwk, kid, alg, use: 'sig' };
}

const accounts = new Map();

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const client = (id, alg) => ({
    client_id: id,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: alg,
  });
  const provider = new Provider(issuer, {
    clients: [client('palisade-rs', 'RS256'), client('palisade-es', 'ES256')],
    jwks: {
      keys: [
        signingKey('rsa', { modulusLength: 2048 }, 'rs-1', 'RS256'),
        signingKey('ec', { namedCurve: 'P-256' }, 'es-1', 'ES256'),
      ],
    },
    scopes: ['openid', 'palisade'],
    claims: { openid: ['sub'], palisade: ['roles', 'groups', 'tenant', 'preferred_username'] },
    // The palisade claims go in the ID token (not only in userinfo).
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    cookies: { keys: ['palisade-tests-only-cookie-key'] },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          const a = accounts.get(id) ?? {};
          return { sub: id, preferred_username: id, roles: [], groups: [], ...a };
        },
      };
    },
  });

  provider.use(async (ctx, next) => {
    const m = ctx.path.match(/^\/test\/accounts\/([A-Za-z0-9._-]+)$/);
    if (m && ctx.method === 'PUT') {
      let raw = '';
      for await (const chunk of ctx.req) raw += chunk;
      accounts.set(m[1], JSON.parse(raw));
      ctx.status = 204;
      return;
    }
    await next();
  });
  // Keep the test output to what matters.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});

// The test harness stops us by closing stdin (and kills us if that fails).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
