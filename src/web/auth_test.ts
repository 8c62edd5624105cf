import assert from "node:assert/strict";
import { CSRF_HEADER, SESSION_COOKIE, WebAuth } from "./auth.ts";

function headers(h: Record<string, string>): Headers {
  return new Headers(h);
}

Deno.test("WebAuth.checkHost accepts IP literals and localhost on its port, and nothing else", () => {
  const auth = new WebAuth({ port: 8081, hostnames: ["wirescope.lan"] });
  for (
    const ok of ["127.0.0.1:8081", "localhost:8081", "[::1]:8081", "10.1.2.3:8081", "wirescope.lan:8081"]
  ) {
    assert.equal(auth.checkHost(ok), null, ok);
  }
  for (
    const bad of ["evil.example:8081", "127.0.0.1:8082", "localhost", "127.0.0.1", "a.localhost.evil:8081"]
  ) {
    assert.equal(auth.checkHost(bad)?.status, 403, bad);
  }
  assert.equal(auth.checkHost(null)?.status, 400);
});

Deno.test("WebAuth: the token makes a session; the cookie is the credential afterwards", () => {
  const auth = new WebAuth({ port: 8081 });
  assert.ok(auth.token.length >= 30);
  assert.ok(auth.tokenMatches(auth.token));
  assert.ok(!auth.tokenMatches(auth.token + "x"));
  assert.ok(!auth.tokenMatches(null));
  const [id, session] = auth.newSession();
  const cookie = auth.cookie(id);
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  assert.equal(auth.session(`other=1; ${SESSION_COOKIE}=${id}`), session);
  assert.equal(auth.session(`${SESSION_COOKIE}=${id}x`), undefined);
  assert.equal(auth.session(null), undefined);
  assert.equal(new WebAuth({ port: 1, password: "hunter22" }).token, "hunter22");
});

Deno.test("WebAuth.checkRequest: no session → 401; a change needs the CSRF header and no foreign Origin", () => {
  const auth = new WebAuth({ port: 8081 });
  const [id, session] = auth.newSession();
  const cookie = `${SESSION_COOKIE}=${id}`;
  const host = "127.0.0.1:8081";
  assert.equal(auth.checkRequest("GET", headers({ host }))?.status, 401);
  assert.equal(auth.checkRequest("GET", headers({ host, cookie })), null);
  assert.equal(auth.checkRequest("POST", headers({ host, cookie }))?.status, 403);
  assert.equal(auth.checkRequest("POST", headers({ host, cookie, [CSRF_HEADER]: "wrong" }))?.status, 403);
  assert.equal(auth.checkRequest("POST", headers({ host, cookie, [CSRF_HEADER]: session.csrf })), null);
  assert.equal(
    auth.checkRequest(
      "DELETE",
      headers({ host, cookie, [CSRF_HEADER]: session.csrf, origin: "http://evil.example" }),
    )
      ?.status,
    403,
  );
  assert.equal(
    auth.checkRequest(
      "POST",
      headers({ host, cookie, [CSRF_HEADER]: session.csrf, origin: `http://${host}` }),
    ),
    null,
  );
});

Deno.test("WebAuth.checkUpgrade: a WebSocket needs this server's Origin and a session", () => {
  const auth = new WebAuth({ port: 8081 });
  const [id] = auth.newSession();
  const host = "localhost:8081";
  const cookie = `${SESSION_COOKIE}=${id}`;
  assert.equal(auth.checkUpgrade(headers({ host, cookie, origin: `http://${host}` })), null);
  assert.equal(auth.checkUpgrade(headers({ host, origin: `http://${host}` }))?.status, 401);
  assert.equal(auth.checkUpgrade(headers({ host, cookie }))?.status, 403);
  assert.equal(auth.checkUpgrade(headers({ host, cookie, origin: "http://evil.example:8081" }))?.status, 403);
});
