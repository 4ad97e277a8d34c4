"""Exposes a local port through a ringress edge with the official ngrok
Python SDK (PyPI `ngrok`), as a user would. Prints the URL, then stays up
until stdin closes (the test harness owns the lifetime)."""

import argparse
import sys

import ngrok

p = argparse.ArgumentParser()
p.add_argument("--server-addr", required=True)
p.add_argument("--root-cas", required=True)
p.add_argument("--domain", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--authtoken", default="sdk-test-token")
# Legacy endpoint options (the SDK sends them as Bind Opts, not as policy).
p.add_argument("--basic-auth", action="append", default=[], help="user:password")
p.add_argument("--request-header-add", action="append", default=[], help="name:value")
p.add_argument("--request-header-remove", action="append", default=[])
p.add_argument("--response-header-add", action="append", default=[], help="name:value")
p.add_argument("--allow-cidr", action="append", default=[])
p.add_argument("--deny-cidr", action="append", default=[])
p.add_argument("--compression", action="store_true")
a = p.parse_args()

options = {}
if a.basic_auth:
    options["basic_auth"] = a.basic_auth
if a.request_header_add:
    options["request_header_add"] = a.request_header_add
if a.request_header_remove:
    options["request_header_remove"] = a.request_header_remove
if a.response_header_add:
    options["response_header_add"] = a.response_header_add
if a.allow_cidr:
    options["allow_cidr"] = a.allow_cidr
if a.deny_cidr:
    options["deny_cidr"] = a.deny_cidr
if a.compression:
    options["compression"] = True

listener = ngrok.forward(
    a.port,
    server_addr=a.server_addr,
    root_cas=a.root_cas,
    authtoken=a.authtoken,
    domain=a.domain,
    **options,
)
print(listener.url(), flush=True)
sys.stdin.read()
