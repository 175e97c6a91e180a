"""`sluice bench`: a load generator for any TGI-compatible server. An HTTP client only: it
imports nothing else from sluice, so it measures TGI itself the same way.
Flow: command → scenarios (what to run) → runner (runs, progress) → client (requests, timing)
→ stats (figures) → report (table, JSON) and plots (PNG)."""
