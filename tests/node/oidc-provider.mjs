// A real OpenID Connect provider (the certified `oidc-provider` package) for the test suite.
//
// Environment:
//   PORT            port on 127.0.0.1 (required)
//   ISSUER          issuer identifier (default http://127.0.0.1:PORT)
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS (space-separated): the one client, Ahead
//   ACCOUNTS        optional JSON {login: {email, email_verified, name, groups}} added to the built-in ones
//
// Its own login and consent forms (devInteractions) accept any login name and any password. Login
// names map to accounts below; an unknown name becomes <name>@example.org with a verified email.
//
// Test hook: POST /__test__/tamper with a JSON body makes the NEXT token response carry a forged ID
// token, so the suite can check what the relying party does with a wrong audience, issuer, nonce or
// expiry, a foreign signature or `alg: none`, on an otherwise real flow:
//   {"claims": {"aud": "someone-else", "exp": 1}, "sign": "provider" | "other-key" | "none"}
//   {"drop": true}: no ID token at all, only the access token.
// A claim set to null is removed. "provider" re-signs with the provider's own key (a token that is
// validly signed but wrong in content).

import { createPrivateKey, createSign, generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
if (!port) {
  console.error('PORT is required');
  process.exit(2);
}
const issuer = process.env.ISSUER || `http://127.0.0.1:${port}`;
const clientId = process.env.CLIENT_ID || 'ahead';
const clientSecret = process.env.CLIENT_SECRET || 'ahead-test-secret';
const redirectUris = (process.env.REDIRECT_URIS || '').split(/\s+/).filter(Boolean);

const ACCOUNTS = {
  alice: { email: 'alice@acme.example', email_verified: true, name: 'Alice Acme', groups: ['customers'] },
  bob: { email: 'bob@globex.example', email_verified: true, name: 'Bob Globex', groups: ['customers'] },
  // Claims an address someone else already uses, without the provider vouching for it.
  mallory: { email: 'carol@acme.example', email_verified: false, name: 'Mallory', groups: [] },
  staffer: { email: 'staffer@acme.example', email_verified: true, name: 'Stella Staffer', groups: ['roadmap-admins'] },
  ...JSON.parse(process.env.ACCOUNTS || '{}'),
};

function accountFor(login) {
  return ACCOUNTS[login] || { email: `${login}@example.org`, email_verified: true, name: login, groups: [] };
}

function rsaJwk(kid) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

const signingKey = rsaJwk(`test-${randomUUID().slice(0, 8)}`);
// Same kid as the real key, different key material: a signature the relying party must reject.
const impostorKey = rsaJwk(signingKey.kid);

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function signJwt(header, payload, jwk) {
  const input = `${b64(header)}.${b64(payload)}`;
  if (header.alg === 'none') return `${input}.`;
  const signature = createSign('RSA-SHA256').update(input).sign(createPrivateKey({ key: jwk, format: 'jwk' }));
  return `${input}.${signature.toString('base64url')}`;
}

function forge(idToken, { claims = {}, sign = 'provider' }) {
  const [header, payload] = idToken.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url')));
  for (const [name, value] of Object.entries(claims)) {
    if (value === null) delete payload[name];
    else payload[name] = value;
  }
  if (sign === 'none') return signJwt({ alg: 'none', typ: header.typ }, payload);
  return signJwt(header, payload, sign === 'other-key' ? impostorKey : signingKey);
}

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomUUID()] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  // Everything the granted scopes allow goes into the ID token itself, not only into /userinfo.
  conformIdTokenClaims: false,
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const account = accountFor(id);
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  // Quiet, deterministic runs: no refresh tokens, no "remember me" between test logins.
  issueRefreshToken: () => false,
  ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
};

const provider = new Provider(issuer, configuration);
// The suite talks plain HTTP on loopback.
provider.proxy = false;

let tamper = null;

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test__/tamper' && ctx.method === 'POST') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    tamper = JSON.parse(Buffer.concat(chunks).toString() || '{}');
    ctx.status = 204;
    return;
  }
  await next();
  if (tamper && ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.id_token) {
    const { id_token: idToken, ...rest } = ctx.body;
    ctx.body = tamper.drop ? rest : { ...rest, id_token: forge(idToken, tamper) };
    tamper = null;
  }
});

provider.on('server_error', (ctx, error) => console.error('server_error', error));

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer} (port ${port})`);
});

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
