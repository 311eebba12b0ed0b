"""The simulated CSP/DSP: a population of premises, a timeline of firmware rollouts,
device behaviour and power outages played on the broker, and a scorecard that says
whether every firmware-caused AD1 stayed away from the DNOs while every genuine outage
got through.

Modules, in the order data flows through them:

- :mod:`.population`: premises (an ESME and its CHF each), pure and seeded; and the
  gateway's home (trust store, GUID list, inventory, configuration) written for them.
- :mod:`.windows`: MP102B's window rules re-stated independently of the engine, in
  simulated time: the ground truth's oracle.
- :mod:`.timeline`: every event of a run at its simulated time, with the ground truth
  of every AD1 (why it was raised, whether the gateway should suppress it); pure and
  seeded.
- :mod:`.frames`: the GBCS frames of the timeline's events, signed, at real times.
- :mod:`.runner`: the I/O: plays the timeline on the broker in scaled real time and
  collects the gateway's outputs.
- :mod:`.scorecard`: pure computation of the scorecard from the ground truth and what
  was observed.
"""
