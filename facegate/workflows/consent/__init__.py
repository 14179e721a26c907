"""Notice, separate consent, minors and withdrawal (issue 24; docs/compliance.md)."""
