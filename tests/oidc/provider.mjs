// A real OpenID Connect provider (npm oidc-provider) for the console's single sign-on tests.
// node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI CLAIMS_JSON
// Every login is a user whose sub and preferred_username are the login; CLAIMS_JSON gives some
// logins other claims ({"mallory": {"preferred_username": "ana"}}: a user who renamed
// themselves). Sign-in uses the provider's development interactions (any login, then a consent
// screen), which the browser test fills like a person would.
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, claimsJson] = process.argv.slice(2);
const extra = JSON.parse(claimsJson || "{}");

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  pkce: { required: () => true },
  claims: { openid: ["sub"], profile: ["preferred_username"] },
  conformIdTokenClaims: false,
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, preferred_username: id, ...(extra[id] || {}), sub: id }),
  }),
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["facegate-test-only-cookie-key"] },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc-provider listening on ${port}`));
