"""The broker connection: how messages reach the gateway and leave it.

The ``Transport`` and ``Outbox`` protocols the shell talks through (protocol), the MQTT
adapter, the only module that imports the MQTT client library (mqtt), and an MQTT broker
inside the process for the simulator demo (embedded_broker).
"""
