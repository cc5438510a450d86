"""Helpers for testing against lockerfleet: a seeded county, fake-free fixtures, fleets."""
