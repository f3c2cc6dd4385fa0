"""Background upkeep: leader election, renewals and collection, self-healing, the policy check."""
