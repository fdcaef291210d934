"""Outbound webhooks: the address guard, Standard Webhooks signing, and one bounded HTTP send."""
