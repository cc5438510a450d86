"""firmware_sim: simulated smart parcel lockers, one or tens of thousands.

:class:`~firmware_sim.locker.Locker` is one locker's firmware, sans I/O, on an injected clock,
with the physical locker around it (doors, parcels, sensors, cooling, power). It speaks the
protocol through :mod:`protocol`, so every payload it sends is one the protocol accepts.
:class:`~firmware_sim.fleet.MqttFleet` runs many of them on one MQTT broker from one network
thread; :class:`~firmware_sim.serial_link.SerialLocker` runs one on a serial line, with
:class:`~firmware_sim.serial_link.SerialHost` for the other end. Faults
(:mod:`firmware_sim.faults`) and simulated people (:mod:`firmware_sim.people`) act on lockers
through an agenda; :class:`~firmware_sim.simulation.Simulation` runs lockers on a manual clock
without any network. The command line is ``locker-sim`` (:mod:`firmware_sim.cli`); the guide is
``docs/simulator.md``.
"""
