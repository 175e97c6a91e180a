"""Speculative decoding's self-contained parts: draft proposers, the rule that verifies drafts
against the target model, and per-request acceptance tracking. Holds no batch or KV state."""
