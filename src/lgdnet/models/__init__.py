"""Models: pure torch. See docs/architecture.md for the contract."""
