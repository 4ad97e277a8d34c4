"""Drives a ringress edge's REST API with the official ngrok API client
(PyPI `ngrok-api`, module `ngrok`), pointed at it with base_url, as a user
would. Creates a reserved domain, a cloud endpoint with a custom-response
policy and a credential; exercises list/get/update/delete; prints one JSON
line with what the Rust test needs next. Any failed check raises."""

import argparse
import json

import ngrok

p = argparse.ArgumentParser()
p.add_argument("--base-url", required=True)
p.add_argument("--api-key", required=True)
p.add_argument("--host", required=True, help="cloud endpoint host")
a = p.parse_args()

client = ngrok.Client(a.api_key, base_url=a.base_url)

# Reserved domain (exact name: certificate through the edge).
rd = client.reserved_domains.create(domain="owned.example.com", description="test domain")
assert rd.id.startswith("rd_"), rd.id
assert rd.domain == "owned.example.com"
assert client.reserved_domains.get(rd.id).domain == "owned.example.com"
rd2 = client.reserved_domains.update(rd.id, description="changed")
assert rd2.description == "changed", rd2
assert any(d.id == rd.id for d in client.reserved_domains.list())

# Cloud endpoint with a custom-response policy.
policy = """
on_http_request:
  - actions:
      - type: custom-response
        config:
          status_code: 200
          headers:
            content-type: text/plain
          body: hello from the cloud
"""
ep = client.endpoints.create(
    url=f"http://{a.host}", type="cloud", traffic_policy=policy, description="cloud one"
)
assert ep.id.startswith("ep_"), ep.id
assert ep.type == "cloud" and ep.url == f"http://{a.host}", ep
got = client.endpoints.get(ep.id)
assert got.traffic_policy == policy
ep2 = client.endpoints.update(ep.id, description="cloud two", metadata='{"k":1}')
assert ep2.description == "cloud two" and ep2.metadata == '{"k":1}', ep2

# A second endpoint, then paging through both with limit=1.
tmp = client.endpoints.create(
    url=f"http://tmp-{a.host}", type="cloud", traffic_policy=policy
)
page = client.endpoints.list(limit="1")
assert len(page.endpoints) == 1 and page.next_page_uri, page
ids = [e.id for e in client.endpoints.list(limit="1")]  # the iterator follows next_page_uri
assert ep.id in ids and tmp.id in ids, ids
client.endpoints.delete(tmp.id)
try:
    client.endpoints.get(tmp.id)
    raise AssertionError("deleted endpoint still there")
except ngrok.NotFoundError as e:
    assert e.http_status_code == 404

# A policy without a terminating action is refused with a clear error.
try:
    client.endpoints.create(
        url=f"http://bad-{a.host}",
        type="cloud",
        traffic_policy="on_http_request:\n  - actions:\n      - type: add-headers\n        config:\n          headers:\n            a: b\n",
    )
    raise AssertionError("non-terminating policy accepted")
except ngrok.Error as e:
    assert e.http_status_code == 400 and "terminating" in str(e.args), e.args

# Credential (agent authtoken) with an ACL.
cr = client.credentials.create(description="sdk", acl=["bind:*.ringress.localhost"])
assert cr.id.startswith("cr_") and cr.token, cr
assert client.credentials.get(cr.id).token is None
cr2 = client.credentials.update(cr.id, description="sdk2")
assert cr2.description == "sdk2"
assert any(c.id == cr.id for c in client.credentials.list())

# API keys.
ak = client.api_keys.create(description="second key")
assert ak.token and ak.id.startswith("ak_")
assert len(list(client.api_keys.list())) == 2
client.api_keys.delete(ak.id)

# Tunnel sessions (none yet).
assert list(client.tunnel_sessions.list()) == []

print(json.dumps({"endpoint": ep.id, "domain": rd.id, "credential": cr.id, "token": cr.token}), flush=True)
