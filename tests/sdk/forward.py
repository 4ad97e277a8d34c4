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
a = p.parse_args()

listener = ngrok.forward(
    a.port,
    server_addr=a.server_addr,
    root_cas=a.root_cas,
    authtoken=a.authtoken,
    domain=a.domain,
)
print(listener.url(), flush=True)
sys.stdin.read()
