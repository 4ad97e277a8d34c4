// A real OpenID provider for tests/oidc_provider.rs and tests/oidc_edge.rs
// (helpers in tests/common/oidc.rs): panva's certified
// `oidc-provider` (npm), over HTTPS on loopback, with one static client and
// a minimal login form (any login name succeeds, consent is granted at once).
//
// Environment:
//   PORT, CERT, KEY            listen on https://127.0.0.1:PORT with this certificate
//   CLIENT_ID, CLIENT_SECRET   the static client
//   REDIRECT_URI               its only redirect URI
// Prints "READY <issuer>" on stdout when listening.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `https://127.0.0.1:${port}`;

const configuration = {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Every client must use PKCE (S256 is the only method allowed by default).
  pkce: { required: () => true },
  cookies: { keys: ['ringress-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: `Test User ${id}`,
        };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
const oidc = provider.callback();

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

async function interaction(req, res) {
  const url = new URL(req.url, issuer);
  const parts = url.pathname.split('/').filter(Boolean); // interaction, uid, [login]
  const uid = parts[1];
  if (req.method === 'GET' && parts.length === 2) {
    const details = await provider.interactionDetails(req, res);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!DOCTYPE html><html><body><h1>Sign in (${details.prompt.name})</h1>
<form method="post" action="/interaction/${uid}/login">
<input name="login" autofocus><button type="submit">Sign in</button></form></body></html>`);
    return;
  }
  if (req.method === 'POST' && parts[2] === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const login = form.get('login');
    if (!login) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('login required');
      return;
    }
    const { params } = await provider.interactionDetails(req, res);
    const grant = new provider.Grant({ accountId: login, clientId: params.client_id });
    grant.addOIDCScope(params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: login }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  res.writeHead(404);
  res.end();
}

const server = createServer(
  { cert: readFileSync(process.env.CERT), key: readFileSync(process.env.KEY) },
  (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res).catch((err) => {
        console.error(err);
        if (!res.headersSent) res.writeHead(500);
        res.end(String(err));
      });
    } else {
      oidc(req, res);
    }
  },
);

server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
