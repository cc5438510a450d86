"""Simulated fleets for CI: scenarios (plain TOML), a runner, invariants, JSON and JUnit reports."""
