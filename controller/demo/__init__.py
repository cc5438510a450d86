"""``lockerfleet demo`` and what it shares with the scenario runner: a county of simulated
lockers with a controller, a broker and simulated people, on one machine."""
