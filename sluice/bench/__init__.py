"""`sluice bench`: a load generator for any TGI-compatible server. An HTTP client only: it
imports nothing else from sluice, so it measures TGI itself the same way."""
