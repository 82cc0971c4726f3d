"""Shared plumbing: base model, audit events, error vocabulary, ISP/time and unit helpers, the HTTP client."""
