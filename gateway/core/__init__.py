"""The pure core: what the gateway decides, with no I/O.

The engine's inputs, values and results (events), the domain values of a device
(devices), the engine that turns inputs and ``now`` into decisions (engine), its timer
wheel (wheel), and the step that turns each result into typed effects for the shell to
apply (pipeline). Nothing here reads a clock, opens a file or touches a socket.
"""
