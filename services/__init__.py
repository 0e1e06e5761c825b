"""The reference order choreography, built only on the `common` toolkit.

Each sub-package is one service: `events.py` (what it consumes and produces), `handlers.py`
(its reactions), `store.py` (its tables) and `app.py` (wiring). Services never import each
other; what they share is the wire contract in `services/contract.py`.
"""
