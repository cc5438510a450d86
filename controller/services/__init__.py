"""Use cases over the database: deposits, pickups, commands, device-message ingest, ...

Services take plain values (and an :class:`~controller.services.context.Actor`) and return
plain values (:mod:`~controller.services.views`); they raise :mod:`controller.domain.errors`.
They know nothing of HTTP or MQTT: the API and the MQTT bridge are two entry points into them.
"""
