// A real OpenID provider for the board's sign-in tests: panva's certified oidc-provider, configured the way
// Auth0 serves an API (JWT access tokens for an audience, RS256) and a single-page application (a public
// client: Authorization Code + PKCE S256, refresh tokens rotated on every use).
//
//   node provider.mjs '<json options>'   (tests/support/oidc_provider.py builds the options and starts it)
//
// Options: port, board (the board's origin), audience, other_audience (a second API: the tokens it gets
// name another audience, for the wrong-audience test), access_ttl_s, role_claim, short_client_id (a second
// client whose refresh tokens last 1 s: the "expired session" test), no_refresh_client_id (a third client
// that may not use refresh tokens: the board renews with prompt=none). Users sign in on the library's
// development login form (any login, any password); the login's prefix picks the role: "frontdesk-…",
// "clinician-…", "ops-…". Its keys and its store live in this process only. Never run this anywhere else.
import Provider, { errors } from 'oidc-provider';

const options = JSON.parse(process.argv[2]);
const issuer = `http://127.0.0.1:${options.port}`;
const scopes = 'read:schedule sync:schedule write:patients ops:breaker';
const ROLES = { frontdesk: 'front-desk', clinician: 'clinician', ops: 'ops' };

function client(clientId, grantTypes = ['authorization_code', 'refresh_token']) {
  return {
    client_id: clientId,
    token_endpoint_auth_method: 'none',
    application_type: 'web',
    grant_types: grantTypes,
    response_types: ['code'],
    redirect_uris: [`${options.board}/`],
    post_logout_redirect_uris: [`${options.board}/?signed_out=1`],
  };
}

function resourceServer(audience) {
  return {
    scope: scopes,
    audience,
    accessTokenTTL: options.access_ttl_s,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

const provider = new Provider(issuer, {
  clients: [
    client(options.client_id),
    client(options.short_client_id),
    client(options.no_refresh_client_id, ['authorization_code']),
  ],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'offline_access', ...scopes.split(' ')],
  claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
  async findAccount(_ctx, sub) {
    return { accountId: sub, claims: async () => ({ sub, name: sub, email: `${sub}@clinic.test` }) };
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => options.audience,
      useGrantedResource: () => true,
      async getResourceServerInfo(_ctx, indicator) {
        if (indicator === options.audience) return resourceServer(options.audience);
        if (indicator === options.other_audience) return resourceServer('https://elsewhere.test/api');
        throw new errors.InvalidTarget();
      },
    },
  },
  // Consent is implied for these first-party clients (as Auth0 skips it for its own applications).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (!ctx.oidc.session.accountId) return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email offline_access');
    grant.addResourceScope(options.audience, scopes);
    if (options.other_audience) grant.addResourceScope(options.other_audience, scopes);
    await grant.save();
    return grant;
  },
  // Refresh tokens for the board as Auth0 issues them with "Allow Offline Access" (this library otherwise
  // keeps offline_access for prompt=consent requests only). They end with the provider's session.
  issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed('refresh_token'),
  async extraTokenClaims(_ctx, token) {
    if (token.kind !== 'AccessToken') return undefined;
    const role = ROLES[String(token.accountId).split('-')[0]];
    return role ? { [options.role_claim]: [role] } : undefined;
  },
  ttl: {
    RefreshToken: (_ctx, _token, c) => (c && c.clientId === options.short_client_id ? 1 : 3600),
    Session: 3600,
    Grant: 3600,
    Interaction: 600,
    AuthorizationCode: 60,
    IdToken: 600,
  },
});
provider.listen(options.port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
