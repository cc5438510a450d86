"""Domain rules of lockerfleet: plain values in, plain values out, no I/O.

The parcel lifecycle and the command lifecycle are each one transition table
(:mod:`~controller.domain.states`); allocation, pickup codes, storage deadlines and lockouts are
pure functions the services call with what they loaded from the database.
"""
